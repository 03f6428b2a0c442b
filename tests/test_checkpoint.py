"""Checkpoint inspection and every bad-input path: exit 2, one line naming the file, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from policy_export.cli.app import app

runner = CliRunner()
NORMALIZER_FILE = "policy_preprocessor_step_3_normalizer_processor.safetensors"


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "pretrained_model"
    shutil.copytree(src, dst)
    return dst


def test_inspect_reports_the_interface(multicam_ckpt):
    res = runner.invoke(app, ["inspect", "--checkpoint", str(multicam_ckpt), "--json"])
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["policy_type"] == "act"
    assert [c["input_name"] for c in spec["cameras"]] == ["image_top", "image_wrist"]
    assert spec["cameras"][1]["shape"] == [3, 72, 96]
    assert (spec["chunk_size"], spec["n_action_steps"], spec["state_dim"], spec["action_dim"]) == (16, 16, 10, 7)
    assert spec["normalization"]["observation.state"] == "MIN_MAX"
    assert spec["normalization"]["observation.images.top"] == "IDENTITY"
    assert len(spec["norm_hash"]) == 12
    table = runner.invoke(app, ["inspect", "--checkpoint", str(multicam_ckpt)])
    assert table.exit_code == 0 and "temporal_ensemble_coeff" in table.output and spec["norm_hash"] in table.output


def test_norm_hash_tracks_statistics(small_ckpt, tmp_path):
    from policy_export.checkpoint import load_checkpoint

    base = load_checkpoint(small_ckpt).spec.norm_hash
    d = _copy(small_ckpt, tmp_path)
    stats = load_file(d / NORMALIZER_FILE)
    stats["observation.state.mean"] = stats["observation.state.mean"] + np.float32(0.01)
    save_file(stats, d / NORMALIZER_FILE)
    assert load_checkpoint(d).spec.norm_hash != base


def _break(kind: str, d: Path) -> str:
    """Damage a copied checkpoint; return a fragment the error line must contain."""
    if kind == "missing-dir":
        shutil.rmtree(d)
        return "does not exist"
    if kind == "missing-config":
        (d / "config.json").unlink()
        return "config.json"
    if kind == "not-act":
        cfg = json.loads((d / "config.json").read_text())
        cfg["type"] = "pi0_fast"
        (d / "config.json").write_text(json.dumps(cfg))
        return "'pi0_fast' is not supported"
    if kind == "missing-weights":
        (d / "model.safetensors").unlink()
        return "model.safetensors"
    if kind == "corrupt-weights":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 3])
        return "corrupted safetensors"
    if kind == "missing-postprocessor":
        (d / "policy_postprocessor.json").unlink()
        return "policy_postprocessor.json"
    stats = load_file(d / NORMALIZER_FILE)
    if kind == "nan-stats":
        stats["observation.state.mean"][1] = np.nan
        save_file(stats, d / NORMALIZER_FILE)
        return "NaN/inf"
    if kind == "zero-std":
        stats["observation.state.std"][3] = 0.0
        save_file(stats, d / NORMALIZER_FILE)
        return "std' is <= 0 at index [3]"
    raise AssertionError(kind)


KINDS = [
    "missing-dir",
    "missing-config",
    "not-act",
    "missing-weights",
    "corrupt-weights",
    "missing-postprocessor",
    "nan-stats",
    "zero-std",
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_checkpoint_exits_2_with_one_line_and_no_output(kind, small_ckpt, tmp_path):
    d = _copy(small_ckpt, tmp_path / "in")
    fragment = _break(kind, d)
    out = tmp_path / "out.onnx"
    res = runner.invoke(app, ["onnx", "--checkpoint", str(d), "--output", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) <= 3, res.output  # one logical line, possibly wrapped by the terminal width
    text = " ".join(res.output.split())
    assert fragment in text and "Traceback" not in text
    assert str(d) in text.replace(" ", "") or d.name in text
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_pretrained_model_hint(small_ckpt, tmp_path):
    parent = tmp_path / "run"
    shutil.copytree(small_ckpt, parent / "pretrained_model")
    res = runner.invoke(app, ["inspect", "--checkpoint", str(parent)])
    assert res.exit_code == 2 and "pretrained_model" in res.output


def test_debug_flag_shows_traceback(tmp_path):
    res = runner.invoke(app, ["--debug", "inspect", "--checkpoint", str(tmp_path / "nope")])
    assert res.exit_code != 0 and res.exception is not None
    res = runner.invoke(app, ["inspect", "--checkpoint", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "Traceback" not in res.output
