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
