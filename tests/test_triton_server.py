"""Repositories written by ``policy-export triton-repo`` served by a REAL Triton server.

One tritonserver (2.51, from the nvidia-pytriton wheel, CPU, 127.0.0.1) serves every model
of this module. ``onnxruntime_onnx`` models run on the ``onnxruntime`` TEST STAND-IN backend
(see policy_export.triton.server): the config is the unmodified generated one, but the
native C++ backend is not installable here. ``--backend python`` models run the shipped
model.py on Triton's real Python backend.

Answers are compared with LeRobot's own eager inference on fresh random inputs.
"""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
from triton_harness import SERVER_VENV, triton_server
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.compare import compare
from policy_export.families import eager_chunk
from policy_export.inputs import checkpoint_inputs
from policy_export.tolerances import default_atol
from policy_export.triton.schema import FIELDS_NEWER_THAN_SERVER

TIMEOUT_S = 60.0
BATCHED = "--max-queue-delay-us", "50000", "--preferred-batch-sizes", "4,8"


@pytest.fixture(scope="module")
def served(small_onnx, small_fp16_onnx, small_uint8_onnx, multicam_onnx, tmp_path_factory):
    """Models written through the CLI exactly as a user would, then one server for all of them."""
    repo = tmp_path_factory.mktemp("triton") / "model_repository"
    runner = CliRunner()
    writes = [
        (small_onnx, "act", 1, "--version-policy", "all", *BATCHED),
        (small_fp16_onnx, "act", 2, "--version-policy", "all", *BATCHED),
        (multicam_onnx, "act_multicam", 1),
        (small_onnx, "act_python", 1, "--backend", "python", *BATCHED),
        (small_uint8_onnx, "act_uint8", 1),
    ]
    for artifact, name, version, *extra in writes:
        args = ["triton-repo", "-a", str(artifact), "--repo", str(repo), "--model", name, "--version", str(version)]
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
    with triton_server(repo) as server:
        print(f"\ntritonserver ready in {server.startup_seconds:.2f} s with {len(writes)} model versions")
        yield server, repo


def _client(protocol: str, url: str):
    if protocol == "http":
        import tritonclient.http as tc

        return tc, tc.InferenceServerClient(url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
    import tritonclient.grpc as tc

    return tc, tc.InferenceServerClient(url)


def infer(server, protocol: str, model: str, version: int, feed: dict[str, np.ndarray]) -> np.ndarray:
    from tritonclient.utils import np_to_triton_dtype

    tc, client = _client(protocol, server.http_url if protocol == "http" else server.grpc_url)
    try:
        inputs = []
        for name, arr in feed.items():
            inp = tc.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        kwargs = {"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}
        outputs = [tc.InferRequestedOutput("action_chunk")]
        res = client.infer(model, inputs, model_version=str(version), outputs=outputs, **kwargs)
        return res.as_numpy("action_chunk")
    finally:
        client.close()


def fresh_feed(loaded, batch: int, image_format: str = "float32") -> tuple[dict[str, np.ndarray], int]:
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh each run; reported on failure
    feed = checkpoint_inputs(loaded, batch, np.random.default_rng(seed), image_format=image_format)
    return feed, seed


CASES = {
    # model, version, checkpoint fixture, image format, precision
    "single camera v1 (fp32)": ("act", 1, "small_loaded", "float32", "fp32"),
    "single camera v2 (fp16)": ("act", 2, "small_loaded", "float32", "fp16"),
    "multi camera": ("act_multicam", 1, "multicam_loaded", "float32", "fp32"),
    "python backend": ("act_python", 1, "small_loaded", "float32", "fp32"),
    "uint8 camera frames": ("act_uint8", 1, "small_loaded", "uint8", "fp32"),
}


def test_server_ready_with_every_model_and_version(served):
    server, _ = served
    _, client = _client("http", server.http_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        index = {(m["name"], m.get("version")): m.get("state") for m in client.get_model_repository_index()}
        for model, version, *_ in CASES.values():
            assert client.is_model_ready(model, str(version)), (model, version, server.log_tail())
            assert index[(model, str(version))] == "READY"
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_metadata_and_config_match_the_artifacts(served, protocol, small_onnx, small_uint8_onnx, multicam_onnx):
    from policy_export.artifacts import inspect_artifact

    server, _ = served
    _, client = _client(protocol, server.http_url if protocol == "http" else server.grpc_url)
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        for model, artifact in (("act", small_onnx), ("act_multicam", multicam_onnx), ("act_uint8", small_uint8_onnx)):
            info = inspect_artifact(artifact)
            meta = client.get_model_metadata(model, **as_json)
            to_triton = {"float": "FP32", "uint8": "UINT8"}
            want = [(s.name, to_triton[s.dtype], [-1, *s.shape[1:]]) for s in info.inputs]
            got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]]
            assert got == want, model
            assert [(t["name"], [int(d) for d in t["shape"]]) for t in meta["outputs"]] == [
                (s.name, [-1, *s.shape[1:]]) for s in info.outputs
            ]
            cfg = client.get_model_config(model, **as_json)
            cfg = cfg.get("config", cfg)
            params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
            spec = info.metadata.spec
            assert params["chunk_size"] == str(spec.chunk_size)
            assert params["n_action_steps"] == str(spec.n_action_steps)
            assert params["normalization_hash"] == spec.norm_hash
            assert params["image_format"] == info.metadata.image_format
            assert int(cfg["max_batch_size"]) == 8
        cfg = client.get_model_config("act", **as_json)
        cfg = cfg.get("config", cfg)
        assert "all" in cfg["version_policy"]
        assert [int(s) for s in cfg["dynamic_batching"]["preferred_batch_size"]] == [4, 8]
    finally:
        client.close()


@pytest.mark.parametrize("case", list(CASES))
def test_answers_match_lerobot_eager_over_http_and_grpc(served, case, request):
    server, _ = served
    model, version, ckpt_fixture, image_format, precision = CASES[case]
    loaded = request.getfixturevalue(ckpt_fixture)
    feed, seed = fresh_feed(loaded, batch=3, image_format=image_format)
    want = eager_chunk(loaded, feed, image_format=image_format)
    for protocol in ("http", "grpc"):
        got = infer(server, protocol, model, version, feed)
        stats = compare(want, got, atol=default_atol(precision))
        assert got.shape == want.shape and stats.passed, (
            f"{case} over {protocol} (seed {seed}): max abs {stats.max_abs:.3g} > {stats.atol:g}"
        )


def test_both_versions_are_served_and_differ(served, small_loaded):
    """Version 2 (fp16) is a different model: its answers differ from version 1's, both near eager."""
    server, _ = served
    feed, _ = fresh_feed(small_loaded, batch=2)
    v1, v2 = (infer(server, "grpc", "act", v, feed) for v in (1, 2))
    assert np.abs(v1 - v2).max() > 0, "version 2 answered exactly like version 1: is it really served?"
    assert compare(v1, v2, atol=default_atol("fp16")).passed


@pytest.mark.parametrize("model", ["act", "act_python"])
def test_dynamic_batching_really_batches(served, model, small_loaded):
    """Concurrent batch-1 requests run in fewer executions, and each answer goes back to its request."""
    import tritonclient.http as httpclient

    server, _ = served
    n = 12
    feed, seed = fresh_feed(small_loaded, batch=n)
    want = eager_chunk(small_loaded, feed)

    def stats(client) -> dict:
        (s,) = client.get_inference_statistics(model, "1")["model_stats"]
        return {
            "exec": s["execution_count"],
            "requests": s["inference_stats"]["success"]["count"],
            "batches": s["batch_stats"],
        }

    client = httpclient.InferenceServerClient(server.http_url, concurrency=n, network_timeout=TIMEOUT_S)
    try:
        before = stats(client)
        pending = []
        for i in range(n):
            inputs = []
            for name, arr in feed.items():
                inp = httpclient.InferInput(name, [1, *arr.shape[1:]], "FP32")
                inp.set_data_from_numpy(arr[i : i + 1])
                inputs.append(inp)
            pending.append(client.async_infer(model, inputs, model_version="1"))
        got = np.concatenate([p.get_result(timeout=TIMEOUT_S).as_numpy("action_chunk") for p in pending])
        # Triton updates statistics after it sends the responses: wait (bounded) for the last ones.
        deadline = time.monotonic() + 10
        after = stats(client)
        while after["requests"] - before["requests"] < n and time.monotonic() < deadline:
            time.sleep(0.05)
            after = stats(client)
    finally:
        client.close()
    requests, executions = after["requests"] - before["requests"], after["exec"] - before["exec"]
    assert requests == n
    assert executions < requests, f"{model}: {executions} executions for {requests} requests: nothing was batched"
    assert any(b["batch_size"] > 1 for b in after["batches"]), after["batches"]
    stats_ = compare(want, got, atol=default_atol("fp32"))
    assert stats_.passed, f"batched answers went to the wrong requests or drifted (seed {seed}): {stats_.max_abs:.3g}"


def _server_python(code: str) -> str:
    out = subprocess.run(
        [str(SERVER_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_offline_schema_is_the_server_schema_plus_known_newer_fields(served):
    """Our validator uses tritonclient 2.67 (numpy 2 / protobuf 6 compatible); the server is 2.51.

    The fields 2.67 adds must be exactly the ones the validator rejects, and every written
    config must parse with tritonclient 2.51's own schema (installed with the server).
    """
    from tritonclient.grpc import model_config_pb2

    _, repo = served
    lister = """
import json, sys
from tritonclient.grpc import model_config_pb2 as pb
def walk(d, out):
    for f in d.fields: out.add(f.full_name)
    for n in d.nested_types: walk(n, out)
out = set()
for m in pb.DESCRIPTOR.message_types_by_name.values(): walk(m, out)
print(json.dumps(sorted(out)))
"""
    server_fields = set(json.loads(_server_python(lister)))
    ours: set[str] = set()

    def walk(d, out: set[str]) -> None:
        for f in d.fields:
            out.add(f.full_name)
        for nested in d.nested_types:
            walk(nested, out)

    for m in model_config_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(m, ours)
    newer = ours - server_fields
    # Fields inside messages that only exist in the newer schema are reachable only through these.
    roots = {f for f in newer if f.rsplit(".", 1)[0] in {".".join(g.split(".")[:-1]) for g in server_fields}}
    assert roots == set(FIELDS_NEWER_THAN_SERVER), sorted(newer)
    assert server_fields <= ours

    parse_all = f"""
from pathlib import Path
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
import tritonclient
for p in sorted(Path({str(repo)!r}).glob("*/config.pbtxt")):
    text_format.Parse(p.read_text(), pb.ModelConfig())
    print(p.parent.name)
"""
    assert sorted(_server_python(parse_all).split()) == ["act", "act_multicam", "act_python", "act_uint8"]


REJECTED = {
    # case: (edit from, edit to, what --check says, what the 2.51 server logs)
    "preferred batch size above max": (
        "preferred_batch_size: [4, 8]", "preferred_batch_size: [4, 16]",
        "preferred_batch_size 16 is outside", "preferred size must be <= max batch size",
    ),
    "warmup input that is not a model input": (
        'key: "state"', 'key: "states"',
        "must be exactly the model inputs", "missing required input(s) ['state']",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REJECTED))
def test_what_check_catches_the_real_server_rejects(case, small_onnx, tmp_path):
    """The offline rules mirror the server: the same edit fails --check and fails the server's load."""
    from triton_harness import require_server

    from policy_export.errors import UnavailableError
    from policy_export.triton.options import TritonOptions
    from policy_export.triton.repo import write_version
    from policy_export.triton.server import TritonServer

    install = require_server()
    old, new, message, server_message = REJECTED[case]
    repo = tmp_path / "repo"
    write_version(small_onnx, repo, "act", 1, TritonOptions(preferred_batch_sizes=(4, 8)))
    cfg = repo / "act" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(old, new, 1))
    res = CliRunner().invoke(app, ["triton-repo", "--check", str(repo)])
    assert res.exit_code == 2 and message in res.output, res.output

    server = TritonServer(repo=repo, install=install, startup_timeout_s=120)
    try:
        with pytest.raises(UnavailableError, match="exited with code") as excinfo, server:
            pass
    finally:
        server.cleanup()
    assert server_message in str(excinfo.value), str(excinfo.value)


def test_server_stops_cleanly(served):
    server, _ = served
    http_port = server.http_port
    assert server.stop() == 0, server.log_tail()
    import socket

    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(1)
        s.connect(("127.0.0.1", http_port))
