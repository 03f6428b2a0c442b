"""The Triton ``parameters`` contract: what the writer puts in config.pbtxt reads back, typed, through
:mod:`policy_export.triton_contract`, through the robot-side reader, and agrees with the template's key.

Configs are written by the real ``triton-repo`` command and parsed with Triton's own schema; every
expected value comes from the artifact files themselves.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.runtime.triton import metadata_from_triton, wire_names
from policy_export.triton_contract import ModelParam, ModelParameters, NamingConvention

runner = CliRunner()
TEMPLATE = Path(__file__).resolve().parents[1] / "model_repository_templates" / "ort_model.py"


def _params(model_dir: Path) -> tuple[pb.ModelConfig, dict[str, str]]:
    cfg = pb.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), cfg)
    return cfg, {k: v.string_value for k, v in cfg.parameters.items()}


def _write(*args: object) -> None:
    res = runner.invoke(app, ["triton-repo", *map(str, args)])
    assert res.exit_code == 0, res.output


def test_written_parameters_read_back_through_the_contract(small_onnx, small_fp16_onnx, tmp_path):
    repo = tmp_path / "repo"
    _write("--artifact", small_onnx, "--repo", repo, "--model", "act", "--version", 1, "--backend", "python")
    _write("--artifact", small_fp16_onnx, "--repo", repo, "--model", "act", "--version", 2, "--intra-op-threads", 2)
    cfg, params = _params(repo / "act")
    typed = ModelParameters.from_strings(params)
    assert typed.to_strings() == params  # nothing written outside the contract, nothing lost

    infos = {1: inspect_artifact(small_onnx), 2: inspect_artifact(small_fp16_onnx)}
    spec = infos[2].metadata.spec
    assert (typed.chunk_size, typed.state_dim, typed.action_dim) == (spec.chunk_size, spec.state_dim, spec.action_dim)
    assert typed.cameras == spec.cameras
    assert typed.policy_input_names == tuple(spec.input_names) == typed.input_names
    assert typed.naming_convention is NamingConvention.GRAPH_NAMES
    assert typed.intra_op_thread_count == 2
    assert sorted(typed.versions) == [1, 2]
    for v, info in infos.items():
        rec = typed.versions[v]
        assert rec.precision == info.metadata.precision
        assert rec.normalization_hash == info.metadata.spec.norm_hash
        assert rec.sha256 == hashlib.sha256((repo / "act" / str(v) / "model.onnx").read_bytes()).hexdigest()
        assert rec.metadata == info.metadata.to_json()

    # The robot-side reader takes the server's JSON form of the same config.
    as_json = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    served = {
        "inputs": [{"name": t.name, "datatype": "FP32", "shape": [-1, *t.dims]} for t in cfg.input],
        "outputs": [{"name": t.name, "datatype": "FP32", "shape": [-1, *t.dims]} for t in cfg.output],
    }
    for v, info in infos.items():
        assert metadata_from_triton(as_json, served, "here", str(v)) == info.metadata
    assert wire_names(as_json) == {n: n for n in [*spec.input_names, "action_chunk"]}


def test_libtorch_wire_names_round_trip(small_torchscript, tmp_path):
    _write("--artifact", small_torchscript, "--repo", tmp_path, "--model", "ts")
    _, params = _params(tmp_path / "ts")
    typed = ModelParameters.from_strings(params)
    assert typed.naming_convention is NamingConvention.NAME_INDEX
    assert typed.input_names == tuple(f"{n}__{i}" for i, n in enumerate(typed.policy_input_names))
    assert typed.intra_op_thread_count is None and ModelParam.INTRA_OP_THREAD_COUNT not in params


def test_intra_op_threads_is_for_the_python_backend(small_onnx, tmp_path):
    res = runner.invoke(
        app,
        [
            "triton-repo",
            "--artifact",
            str(small_onnx),
            "--repo",
            str(tmp_path),
            "--model",
            "m",
            "--intra-op-threads",
            "2",
        ],
    )
    assert res.exit_code == 2 and "--backend python" in res.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", ["INTRA_OP_THREAD_COUNT"])
def test_python_backend_template_uses_the_contracts_key(name):
    """The template runs inside Triton and cannot import policy-export: its copy of the key must agree."""
    tree = ast.parse(TEMPLATE.read_text())
    values = {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert values[name] == ModelParam[name]
