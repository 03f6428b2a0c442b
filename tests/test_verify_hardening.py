"""verify checks what is deployed: another checkpoint's artifact is exit 2, --rollout runs the settings the
artifact carries, and absurd run sizes are refused up front in one line."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.spec import METADATA_KEY

runner = CliRunner()


def one_line(output: str) -> str:
    return " ".join(output.split())


def with_metadata(src: Path, dst: Path, **spec_changes: object) -> Path:
    """``src`` with its embedded policy metadata edited (the network itself untouched)."""
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            meta = json.loads(prop.value)
            spec = meta["spec"]
            for key, value in spec_changes.items():
                part, _, name = key.rpartition(".")  # "host.ensemble_coeff": a field of the host declaration
                (spec[part] if part else spec)[name or key] = value
            prop.value = json.dumps(meta, sort_keys=True)
    onnx.save(model, str(dst))
    return dst


def verify(*args: object) -> object:
    return runner.invoke(app, ["verify", *map(str, args)])


def test_artifact_of_another_checkpoint_exits_2_unless_allowed(small_ckpt, small_onnx, tmp_path):
    other = with_metadata(small_onnx, tmp_path / "other.onnx", norm_hash="0123456789ab")
    base = ("-c", small_ckpt, "-a", other, "--batch-sizes", "1", "--samples", "1")
    res = verify(*base)
    assert res.exit_code == 2, res.output
    line = one_line(res.output)
    assert "exported from another checkpoint (normalization hash 0123456789ab" in line, res.output
    assert "--allow-other-checkpoint" in line and "Parity vs LeRobot eager" not in res.output
    res = verify(*base, "--rollout", 4)
    assert res.exit_code == 2 and "exported from another checkpoint" in one_line(res.output), res.output

    res = verify(*base, "--allow-other-checkpoint")
    assert res.exit_code == 0, res.output  # the same network: within tolerance, but said out loud
    assert "warning" in res.output and "normalization hash 0123456789ab" in one_line(res.output)


def test_rollout_refuses_an_artifact_whose_shim_settings_differ(small_ckpt, small_onnx, tmp_path):
    # Same network and statistics; the metadata PolicyClient reads says n_action_steps 5, the checkpoint 10.
    drifted = with_metadata(small_onnx, tmp_path / "drifted.onnx", n_action_steps=5)
    res = verify("-c", small_ckpt, "-a", drifted, "--batch-sizes", "1", "--samples", "1", "--rollout", 4)
    assert res.exit_code == 2, res.output
    line = one_line(res.output)
    assert "carries n_action_steps 5 (checkpoint: 10), which PolicyClient would run" in line, res.output
    assert "Parity vs LeRobot eager" not in res.output  # refused before any check ran

    ens = with_metadata(small_onnx, tmp_path / "ens.onnx", **{"n_action_steps": 1, "host.ensemble_coeff": 0.01})
    res = verify("-c", small_ckpt, "-a", ens, "--batch-sizes", "1", "--samples", "1", "--rollout", 4)
    assert res.exit_code == 2 and "host.ensemble_coeff 0.01 (checkpoint: None)" in one_line(res.output)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-sizes", "1000000000000"], "--batch-sizes 1000000000000: needs at least"),
        (["--batch-sizes", "1,4", "--samples", "1000000000"], "--samples 1000000000: at most"),
        (["--rollout", "1000000000"], "--rollout 1000000000: at most"),
    ],
    ids=["batch", "samples", "rollout"],
)
def test_absurd_sizes_are_refused_up_front(small_ckpt, small_onnx, extra, message):
    res = verify("-c", small_ckpt, "-a", small_onnx, *extra)
    assert res.exit_code == 2, res.output
    assert message in one_line(res.output) and res.output.count("error:") == 1, res.output
    assert "Traceback" not in res.output and "MemoryError" not in res.output


def test_export_refuses_absurd_batch_sizes_before_exporting(small_ckpt, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["export", "-c", str(small_ckpt), "--out-dir", str(out), "--batch-sizes", "1000000000000"])
    assert res.exit_code == 2, res.output
    assert "needs at least" in one_line(res.output), res.output
    assert sorted(p.name for p in out.iterdir()) == ["export-report.json"]  # no artifact was built
