"""The runtime client never runs on garbage and never outlives its deadline (issue 10, item 5).

- NaN/inf in the state or an image, float frames outside [0, 1] (0-255 passed as float), and a
  batch of 0 robots are one clear line by default; ``check_inputs=False`` /
  ``INFERENCE_CHECK_INPUTS=0`` lets users who know what they do through.
- ``timeout_s`` bounds the whole call: an HTTP server trickling one byte at a time and a gRPC
  server that never finishes its answer both end at the deadline. (Against a real frozen and a
  real restarted tritonserver, including identity re-checks: test_realtime_drills.py.)
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from policy_export.errors import BadInputError, UnavailableError
from policy_export.runtime import PolicyClient


@pytest.fixture(scope="module")
def client(small_onnx):
    with PolicyClient.from_artifact(small_onnx) as c:
        yield c


def _obs(spec, state=None, image=None):
    c, h, w = spec.cameras[0].shape
    return {
        spec.state_key: np.zeros(spec.state_dim, np.float32) if state is None else state,
        spec.cameras[0].key: np.full((c, h, w), 0.5, np.float32) if image is None else image,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "state",
            lambda s: np.array([0, np.nan, 0, 0, 0, 0], np.float32),
            r"observation\.state: NaN or inf at \[0, 1\]",
        ),
        ("state", lambda s: np.full(6, np.inf, np.float32), r"observation\.state: NaN or inf"),
        ("image", lambda s: np.full(s, np.nan, np.float32), r"observation\.images\.top: NaN or inf in the image"),
        (
            "image",
            lambda s: np.full(s, 255.0, np.float32),
            r"values in \[255, 255\], outside \[0, 1\].*divide .* by 255",
        ),
        ("image", lambda s: np.full(s, -0.5, np.float32), r"outside \[0, 1\]"),
    ],
)
def test_bad_values_are_one_line_with_the_opt_out(client, small_onnx, field, value, message):
    spec = client.metadata.spec
    shape = spec.cameras[0].shape
    obs = _obs(spec, **{field: value(shape)})
    with pytest.raises(BadInputError, match=message) as err:
        client.predict_chunk(obs)
    assert "\n" not in str(err.value) and "check_inputs=False (INFERENCE_CHECK_INPUTS=0)" in str(err.value)
    with PolicyClient.from_artifact(small_onnx, check_inputs=False) as trusting:
        trusting.predict_chunk(obs)  # the user said they know: it runs
    with PolicyClient.from_env({"POLICY_ARTIFACT": str(small_onnx), "INFERENCE_CHECK_INPUTS": "0"}) as trusting:
        trusting.predict_chunk(obs)


def test_valid_frames_pass(client):
    spec = client.metadata.spec
    c, h, w = spec.cameras[0].shape
    edges = np.zeros((c, h, w), np.float32)
    edges[0, 0, 0] = 1.0  # [0, 1] inclusive
    assert client.predict_chunk(_obs(spec, image=edges)).shape == (1, spec.chunk_size, spec.action_dim)
    frame = np.full((h, w, c), 255, np.uint8)  # uint8 frames are always in range
    assert client.predict_chunk(_obs(spec, image=frame)).shape == (1, spec.chunk_size, spec.action_dim)


def test_a_batch_of_zero_robots_says_what_is_wrong_with_the_input(client):
    spec = client.metadata.spec
    c, h, w = spec.cameras[0].shape
    obs = {spec.state_key: np.zeros((0, spec.state_dim), np.float32), spec.cameras[0].key: np.zeros((0, h, w, c))}
    for call in (client.select_action, client.predict_chunk):
        with pytest.raises(BadInputError, match=r"observation\.state: a batch of 0 robots \(shape \(0, 6\)\)"):
            call(obs)
    with pytest.raises(BadInputError, match=r"INFERENCE_CHECK_INPUTS=.*use 1 or 0"):
        PolicyClient.from_env({"POLICY_ARTIFACT": "x.onnx", "INFERENCE_CHECK_INPUTS": "maybe"})


# -- whole-call deadlines ------------------------------------------------------------------------------


class Trickler:
    """An HTTP server that answers every request with headers, then one body byte every ``every_s``,
    for at most ``for_s`` (so that a client without a whole-call deadline still ends, late)."""

    def __init__(self, every_s: float = 0.2, for_s: float = 8.0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.every_s, self.for_s = every_s, for_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n")
                end = time.monotonic() + self.for_s
                while time.monotonic() < end and not self.stop.wait(self.every_s):
                    conn.sendall(b" ")
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_http_call_that_trickles_ends_at_the_whole_call_deadline():
    pytest.importorskip("tritonclient.http")
    server = Trickler()
    try:
        t0 = time.monotonic()
        with pytest.raises(UnavailableError, match=r"failed: TimeoutError: timed out.*\(timeout 1 s\)") as err:
            PolicyClient.from_triton(server.url, "act", protocol="http", timeout_s=1.0)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert "\n" not in str(err.value)
    # Each byte arrives well within the socket timeout: only a whole-call deadline ends this before 8 s.
    assert elapsed < 1.0 + 3.0, elapsed


def test_grpc_call_that_never_finishes_ends_at_the_deadline():
    pytest.importorskip("tritonclient.grpc")
    from concurrent import futures

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    release = threading.Event()

    class Stuck(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, request, context):
            release.wait(8.0)  # a server that accepted the call and never answers
            return service_pb2.ServerLiveResponse(live=True)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Stuck(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(UnavailableError, match=r"liveness check failed: .*Deadline Exceeded.*\(timeout 1 s\)"):
            PolicyClient.from_triton(f"127.0.0.1:{port}", "act", protocol="grpc", timeout_s=1.0)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        server.stop(0)
    assert elapsed < 1.0 + 3.0, elapsed


def test_model_identity_differences_name_what_changed():
    from policy_export.runtime.triton import ModelIdentity

    sig = (("action_chunk", "FP32", (-1, 20, 5)), ("state", "FP32", (-1, 6)))
    a = ModelIdentity(sig, "n" * 16, "s" * 64)
    assert a.differences(ModelIdentity(sig, "n" * 16, "s" * 64)) == []
    other = ModelIdentity(sig[:1], "m" * 16, "t" * 64)
    assert a.differences(other) == [
        "input/output signature differs",
        "normalization hash mmmmmmmmmmmm != nnnnnnnnnnnn",
        "model file sha256 tttttttttttt != ssssssssssss",
    ]
