"""Artifacts cannot lie (issue 18 item 3): metadata is checked, field by field, before it sizes anything.

Every place an artifact is opened reads it through ``inspect_artifact`` (and, for a served model,
``metadata_from_triton``): each field's type and bounds are checked, the record's parts must agree
(``spec.action_dim`` vs the signature's dims, cameras vs camera inputs), the family's own fields
follow its declared rules, and an ONNX file's metadata must describe its real graph. A lie is one
line naming the field: exit 2 on the command line, ``BadInputError`` at run time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact
from policy_export.cli.app import app
from policy_export.errors import BadInputError
from policy_export.runtime import PolicyClient
from policy_export.spec import METADATA_KEY

runner = CliRunner()
SCHEMA2_ACT = Path(__file__).parent / "data" / "schema2_act_ensemble.onnx"


def one_line(output: str) -> str:
    return " ".join(output.split())


def edited(src: Path, dst: Path, edit) -> Path:
    """``src`` with ``edit(metadata dict)`` applied to its embedded policy metadata (graph untouched)."""
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            meta = json.loads(prop.value)
            edit(meta)
            prop.value = json.dumps(meta)
    onnx.save(model, str(dst))
    return dst


def _wrong_action_dim(meta):  # consistent inside the record, so only the graph can tell
    meta["spec"]["action_dim"] = 4
    meta["spec"]["signature"]["dims"]["action_dim"] = 4


def _absurd_chunk(meta):
    meta["spec"]["chunk_size"] = 10**12
    meta["spec"]["signature"]["dims"]["chunk"] = 10**12


CASES = {
    "wrong action_dim": (_wrong_action_dim, "metadata spec.action_dim says 4, the graph's action_chunk has 5"),
    "absurd chunk": (_absurd_chunk, "spec.chunk_size = 1000000000000 is outside [1, 65536]"),
    "chunk as a string": (
        lambda m: m["spec"].__setitem__("chunk_size", "20"),
        "spec.chunk_size is '20', not an integer",
    ),
    "action_dim disagrees with the signature": (
        lambda m: m["spec"].__setitem__("action_dim", 4),
        "spec.signature.dims.action_dim = 5 but spec says 4",
    ),
    "an image size the graph does not take": (
        lambda m: [
            m["spec"]["cameras"][0].__setitem__("shape", [3, 96, 127]),
            m["spec"]["signature"]["inputs"][1].__setitem__("shape", ["batch", 3, 96, 127]),
        ],
        "metadata image dim 3 says 127, the graph's image has 128 there",
    ),
    "n_action_steps past the chunk": (
        lambda m: m["spec"].__setitem__("n_action_steps", 21),
        "spec.n_action_steps = 21 is outside [1, 20]",
    ),
    "an unknown role": (
        lambda m: m["spec"]["signature"]["inputs"][0].__setitem__("role", "telepathy"),
        "spec.signature.inputs[0].role 'telepathy' is not one of",
    ),
    "a host history of a billion steps": (
        lambda m: m["spec"]["host"].__setitem__("history", 10**9),
        "spec.host.history = 1000000000 is outside",
    ),
    "an ensembling coefficient that is not a number": (
        lambda m: m["spec"]["host"].__setitem__("ensemble_coeff", "0.01"),
        "spec.host.ensemble_coeff is '0.01'",
    ),
    "a field ACT does not have": (
        lambda m: m["spec"]["family"].__setitem__("horizon", 16),
        "spec.family.horizon is not a field of the act family",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_lying_artifact_is_refused_in_one_line_everywhere_it_is_opened(small_onnx, tmp_path, case):
    edit, message = CASES[case]
    bad = edited(small_onnx, tmp_path / "bad.onnx", edit)
    with pytest.raises(BadInputError, match=re.escape(message)) as err:
        inspect_artifact(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(BadInputError, match=r"bad\.onnx"):
        PolicyClient.from_artifact(bad)  # the runtime (and RealtimeClient, built on it)
    res = runner.invoke(app, ["triton-repo", "--artifact", str(bad), "--repo", str(tmp_path / "repo"), "--name", "m"])
    assert res.exit_code == 2 and message in one_line(res.output), res.output
    assert not (tmp_path / "repo" / "m").exists()


def test_verify_and_bench_refuse_a_lying_artifact(small_ckpt, small_onnx, tmp_path):
    bad = edited(small_onnx, tmp_path / "bad.onnx", _wrong_action_dim)
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(bad), "--batch-sizes", "1", "--samples", "1"])
    assert res.exit_code == 2 and "spec.action_dim says 4" in one_line(res.output), res.output
    res = runner.invoke(app, ["bench", "-c", str(small_ckpt), "-a", str(bad), "--batch-sizes", "1"])
    assert res.exit_code == 2 and "spec.action_dim says 4" in one_line(res.output), res.output


def test_realtime_client_from_env_refuses_a_lying_artifact(small_onnx, tmp_path):
    from policy_export.runtime import RealtimeClient

    bad = edited(small_onnx, tmp_path / "bad.onnx", _absurd_chunk)
    with pytest.raises(BadInputError, match=r"spec\.chunk_size = 1000000000000 is outside"):
        RealtimeClient.from_env({"POLICY_ARTIFACT": str(bad), "INFERENCE_FPS": "30"})


def test_old_schema_records_are_bounded_too(tmp_path):
    """An old (schema 2) record is upgraded, then checked like today's: no MemoryError from its chunk."""

    def absurd(meta):
        meta["spec"]["chunk_size"] = 10**12

    bad = edited(SCHEMA2_ACT, tmp_path / "old.onnx", absurd)
    with pytest.raises(BadInputError, match=r"spec\.chunk_size = 1000000000000 is outside"):
        PolicyClient.from_artifact(bad)


def test_torchscript_graph_answering_another_width_is_refused(small_torchscript, tmp_path):
    """TorchScript keeps its metadata in an extra file: the forward's arity is checked on load, the
    output's width on every call (one line, never actions of one width and fallbacks of another)."""
    import zipfile

    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(small_torchscript) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("extra/policy_export.json"):
                meta = json.loads(data)
                _wrong_action_dim(meta)
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    with PolicyClient.from_artifact(bad) as client:
        spec = client.metadata.spec
        obs = {
            spec.state_key: np.zeros(spec.state_dim, np.float32),
            **{c.key: np.full(c.shape, 0.5, np.float32) for c in spec.cameras},
        }
        with pytest.raises(
            BadInputError, match=r"the graph returned action_chunk \[1, 20, 5\], its metadata says \[batch, 20, 4\]"
        ):
            client.select_action(obs)
