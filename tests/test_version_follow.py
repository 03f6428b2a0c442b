"""The Triton client's version policy, against a scripted server whose answers come from a real repository's
config (``triton-repo`` wrote versions 1 and 2): a pinned client never runs another version, a client following
the newest switches only after the handshake on it and never goes back, and an answer from a version that was
not asked for is refused. The real-server version of this is the rolling-upgrade drill (-m fleet)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_triton_s3 import v2_onnx  # noqa: F401  (the fixture: v1 with its action head moved)

from policy_export.errors import UnavailableError
from policy_export.runtime.backends import ModelChangedError


class Served:
    """What the scripted server serves now."""

    def __init__(self, config: dict, io: dict) -> None:
        self.config, self.io = config, io
        self.versions: set[str] = {"1"}
        self.answer_as: str | None = None


SERVERS: dict[str, Served] = {}


class ScriptedClient:
    """tritonclient.grpc.InferenceServerClient's calls the client makes, answered from ``SERVERS[url]``."""

    def __init__(self, url: str, **_kw: object) -> None:
        self.s = SERVERS[url]

    def is_server_live(self, **_kw: object) -> bool:
        return True

    is_server_ready = is_server_live

    def is_model_ready(self, model: str, version: str = "", **_kw: object) -> bool:
        return version in self.s.versions if version else bool(self.s.versions)

    def get_model_metadata(self, model: str, version: str = "", as_json: bool = False, **_kw: object) -> dict:
        if version and version not in self.s.versions:
            raise RuntimeError(f"Request for unknown model: '{model}' version {version} is not found")
        return {"name": model, "versions": sorted(self.s.versions, key=int), **self.s.io}

    def get_model_config(self, model: str, version: str = "", as_json: bool = False, **_kw: object) -> dict:
        return {"config": self.s.config}

    def infer(self, model: str, inputs: list, model_version: str = "", outputs: object = None, **_kw: object):
        if model_version not in self.s.versions:
            raise RuntimeError(f"Request for unknown model: '{model}' version {model_version} is not found")
        answered = self.s.answer_as or model_version
        batch = inputs[0].shape()[0]
        chunk = np.full((batch, 20, 5), float(answered), dtype=np.float32)
        return SimpleNamespace(as_numpy=lambda _n: chunk, get_response=lambda: SimpleNamespace(model_version=answered))

    def get_model_repository_index(self, **_kw: object) -> SimpleNamespace:
        return SimpleNamespace(models=[SimpleNamespace(name="act", version=v, state="READY") for v in self.s.versions])

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def served(small_onnx, v2_onnx, tmp_path_factory):  # noqa: F811
    from google.protobuf import json_format

    from policy_export.triton.repo import write_version
    from policy_export.triton.schema import model_config_pb2, parse_config

    repo = tmp_path_factory.mktemp("follow")
    write_version(small_onnx, repo, "act", 1, {"version_policy": "all"})
    write_version(v2_onnx, repo, "act", 2)
    cfg = parse_config(repo / "act" / "config.pbtxt")
    names = model_config_pb2().DataType.Name

    def tensors(ts: object) -> list[dict]:
        return [{"name": t.name, "datatype": names(t.data_type)[5:], "shape": [-1, *t.dims]} for t in ts]

    io = {"inputs": tensors(cfg.input), "outputs": tensors(cfg.output)}
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True), io


@pytest.fixture
def server(served, monkeypatch):
    import tritonclient.grpc

    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", ScriptedClient)
    SERVERS["a:1"] = Served(*served)
    yield SERVERS["a:1"]
    SERVERS.clear()


def _feed(core) -> dict[str, np.ndarray]:
    return {k: np.zeros((1, *v[1:]), dtype=np.float32) for k, v in core.metadata.input_shapes().items()}


def test_following_client_switches_after_the_handshake_and_never_goes_back(server):
    from policy_export.runtime.triton import TritonCore

    core = TritonCore("a:1", "act", "latest")
    feed = _feed(core)
    assert core.version == "1" and core.infer(feed)[0, 0, 0] == 1.0
    first = core.identity
    server.versions = {"1", "2"}
    assert core.infer(feed)[0, 0, 0] == 2.0 and core.version == "2"
    assert core.identity.sha256 != first.sha256 and core.identity.signature == first.signature
    server.versions = {"2"}
    assert core.infer(feed)[0, 0, 0] == 2.0
    server.versions = {"1"}  # a replica behind: passed over, never run
    with pytest.raises(UnavailableError, match="older than 2"):
        core.infer(feed)
    core.close()


def test_pinned_client_never_runs_another_version(server):
    from policy_export.runtime.triton import TritonCore

    server.versions = {"1", "2"}
    core = TritonCore("a:1", "act", "1")
    feed = _feed(core)
    assert core.infer(feed)[0, 0, 0] == 1.0
    server.versions = {"2"}
    with pytest.raises((UnavailableError, ModelChangedError)):
        core.infer(feed)
    with pytest.raises((UnavailableError, ModelChangedError)):
        core.infer(feed)
    core.close()


def test_an_answer_from_another_version_is_refused(server):
    from policy_export.runtime.triton import TritonCore

    core = TritonCore("a:1", "act", "1")
    server.answer_as = "2"
    with pytest.raises(ModelChangedError, match="version 2 answered a request for version 1"):
        core.infer(_feed(core))
    core.close()
