"""The full-size demo policy (3x480x640, chunk 100): the README's main job, end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path):
    res = runner.invoke(app, ["demo", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["status"] == "passed"
    assert report["policy"]["cameras"][0]["shape"] == [3, 480, 640] and report["policy"]["chunk_size"] == 100
    assert {r["batch_size"] for r in report["checks"][0]["results"]} == {1, 4}
    assert all(r["stats"]["max_abs"] <= 1e-4 for r in report["checks"][0]["results"])
    assert (tmp_path / "parity.xml").exists() and '"status": "passed"' in " ".join(res.output.split())
    # Second run reuses checkpoint and artifact; without --force nothing is rebuilt.
    mtime = (tmp_path / "act_demo.onnx").stat().st_mtime
    res = runner.invoke(app, ["demo", "--out-dir", str(tmp_path)])
    assert res.exit_code == 0 and (tmp_path / "act_demo.onnx").stat().st_mtime == mtime


def test_diffusion_demo_builds_exports_verifies_and_reuses(tmp_path, monkeypatch):
    """``demo --family diffusion``: checkpoint -> ONNX -> verify -> summary, beside an ACT demo's files.

    The tests' tiny DDPM policy stands in for the demo's own small one (SMALL_DIFFUSION_RECIPE: ~30 s of
    CPU for export and verify) to keep the default run short; everything else is the command as users run it.
    """
    from conftest import DIFF_DDPM, one_torch_thread

    import policy_export.demo as demo_module

    monkeypatch.setattr(demo_module, "SMALL_DIFFUSION_RECIPE", demo_module.DiffusionRecipe(**DIFF_DDPM))
    with one_torch_thread():
        res = runner.invoke(app, ["demo", "--family", "diffusion", "--out-dir", str(tmp_path)], terminal_width=400)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "diffusion-parity.json").read_text())
    assert report["status"] == "passed" and report["policy"]["policy_type"] == "diffusion"
    assert {r["batch_size"] for r in report["checks"][0]["results"]} == {1, 4}
    assert (tmp_path / "diffusion-parity.xml").is_file()
    assert (tmp_path / "diffusion-checkpoint" / "pretrained_model" / "model.safetensors").is_file()
    assert not (tmp_path / "parity.json").exists() and not (tmp_path / "checkpoint").exists()  # ACT's names stay free
    summary = json.loads(" ".join(res.output.split()).split("summary ", 1)[1])
    assert summary["family"] == "diffusion" and summary["status"] == "passed"
    mtime = (tmp_path / "diffusion_demo.onnx").stat().st_mtime
    with one_torch_thread():
        again = runner.invoke(app, ["demo", "--family", "diffusion", "--out-dir", str(tmp_path)])
    assert again.exit_code == 0 and (tmp_path / "diffusion_demo.onnx").stat().st_mtime == mtime
