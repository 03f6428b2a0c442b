"""No input is ever overwritten, reports only replace reports, and SIGTERM cleans up like Ctrl-C.

Every command that writes is driven through the real CLI with an output path that is, or
resolves to, one of its inputs (directly, through a symlink, a hard link, or a folder
inside the checkpoint); each must exit 2 with one line, ``--force`` or not, and leave the
input byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.errors import BadInputError
from policy_export.fsutil import check_report_writable, input_conflict, is_our_report

runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def ckpt_copy(small_ckpt, tmp_path) -> Path:
    """A private copy of the small checkpoint (tests below aim outputs into it)."""
    import shutil

    dst = tmp_path / "ckpt" / "pretrained_model"
    shutil.copytree(small_ckpt, dst)
    return dst


def test_input_conflict_sees_through_symlinks_hard_links_and_dotdot(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    weights = ckpt / "model.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "link_to_ckpt").symlink_to(ckpt)
    (tmp_path / "weights_symlink").symlink_to(weights)
    os.link(weights, tmp_path / "weights_hardlink")
    artifact = tmp_path / "policy.onnx"
    artifact.write_bytes(b"onnx")
    os.link(artifact, tmp_path / "policy_hardlink.onnx")
    blob = tmp_path / "cache" / "blob"  # a hub-style checkpoint: its file is a link to a blob elsewhere
    blob.parent.mkdir()
    blob.write_bytes(b"stats")
    (ckpt / "stats.safetensors").symlink_to(blob)

    inputs = [ckpt, artifact]
    refused = {
        ckpt / "new.onnx": "inside the input folder",
        tmp_path / "link_to_ckpt" / "new.onnx": "inside the input folder",
        tmp_path / "other" / ".." / "ckpt" / "x" / "deep.json": "inside the input folder",
        tmp_path / "weights_symlink": "inside the input folder",
        blob: "is the input file",
        tmp_path / "weights_hardlink": "is the input file",  # no path in common: only the inode says so
        artifact: "is the input file",
        tmp_path / "policy_hardlink.onnx": "is the input file",
    }
    for out, why in refused.items():
        assert why in (input_conflict(out, inputs) or ""), out
    for ok in (tmp_path / "report.json", tmp_path / "ckpt-report.json", tmp_path / "other" / "policy.onnx"):
        assert input_conflict(ok, inputs) is None, ok


def test_verify_reports_never_overwrite_the_artifact_or_the_checkpoint(ckpt_copy, small_onnx, tmp_path):
    artifact = tmp_path / "policy.onnx"
    artifact.write_bytes(small_onnx.read_bytes())
    weights = ckpt_copy / "model.safetensors"
    (tmp_path / "report_link.json").symlink_to(artifact)
    os.link(weights, tmp_path / "weights_hardlink.xml")
    before = (digest(artifact), tree_digest(ckpt_copy))
    cases = [
        ["--report", artifact],
        ["--junit", weights],
        ["--report", weights, "--force"],  # --force replaces our reports, never an input
        ["--junit", artifact, "--force"],
        ["--report", tmp_path / "report_link.json", "--force"],
        ["--junit", tmp_path / "weights_hardlink.xml", "--force"],
        ["--report", ckpt_copy / "parity.json"],  # a new file, but inside the checkpoint folder
    ]
    for extra in cases:
        res = runner.invoke(app, ["verify", "-c", str(ckpt_copy), "-a", str(artifact), *map(str, extra)])
        assert res.exit_code == 2, (extra, res.output)
        assert "inputs are never overwritten" in one_line(res.output), (extra, res.output)
        assert "Parity vs LeRobot eager" not in res.output  # refused before any work
    assert (digest(artifact), tree_digest(ckpt_copy)) == before
    assert not (ckpt_copy / "parity.json").exists()


@pytest.mark.parametrize("command", ["onnx", "torchscript"])
def test_export_into_the_checkpoint_is_refused_even_with_force(command, ckpt_copy, tmp_path):
    (tmp_path / "ckpt_link").symlink_to(ckpt_copy)
    before = tree_digest(ckpt_copy)
    for out in (ckpt_copy / "policy.bin", tmp_path / "ckpt_link" / "policy.bin", ckpt_copy / "model.safetensors"):
        res = runner.invoke(app, [command, "-c", str(ckpt_copy), "-o", str(out), "--force"])
        assert res.exit_code == 2 and "inputs are never overwritten" in one_line(res.output), res.output
    assert tree_digest(ckpt_copy) == before


def test_export_pipeline_and_tensorrt_refuse_inputs(ckpt_copy, small_onnx, tmp_path):
    before = tree_digest(ckpt_copy)
    res = runner.invoke(app, ["export", "-c", str(ckpt_copy), "--out-dir", str(ckpt_copy / "out"), "--force"])
    assert res.exit_code == 2 and "inside the input folder" in one_line(res.output), res.output
    res = runner.invoke(
        app, ["export", "-c", str(ckpt_copy), "--out-dir", str(tmp_path / "o"), "--junit", str(ckpt_copy / "x.xml")]
    )
    assert res.exit_code == 2 and "inside the input folder" in one_line(res.output), res.output
    assert tree_digest(ckpt_copy) == before and not (ckpt_copy / "out").exists()

    onnx_copy = tmp_path / "policy.onnx"
    onnx_copy.write_bytes(small_onnx.read_bytes())
    res = runner.invoke(app, ["tensorrt", "--onnx", str(onnx_copy), "-o", str(onnx_copy), "--force"])
    assert res.exit_code == 2 and "is the input file" in one_line(res.output), res.output
    assert digest(onnx_copy) == digest(small_onnx)


def test_bench_and_triton_repo_refuse_inputs(small_ckpt, small_onnx, tmp_path):
    artifact = tmp_path / "policy.onnx"
    artifact.write_bytes(small_onnx.read_bytes())
    for flag in ("--json", "--plot"):
        res = runner.invoke(app, ["bench", "-c", str(small_ckpt), "-a", str(artifact), flag, str(artifact), "--force"])
        assert res.exit_code == 2 and "is the input file" in one_line(res.output), res.output
    # --repo/--model naming the artifact itself: the model folder would replace the file.
    res = runner.invoke(
        app, ["triton-repo", "-a", str(artifact), "--repo", str(tmp_path), "--model", "policy.onnx", "--force"]
    )
    assert res.exit_code == 2 and "is the input file" in one_line(res.output), res.output
    assert digest(artifact) == digest(small_onnx)


def test_reports_replace_only_our_reports_unless_forced(small_ckpt, small_onnx, tmp_path):
    notes, report, junit = tmp_path / "notes.json", tmp_path / "r.json", tmp_path / "r.xml"
    notes.write_text('{"my": "notes"}\n')
    base = ["verify", "-c", str(small_ckpt), "-a", str(small_onnx), "--batch-sizes", "1", "--samples", "1"]

    res = runner.invoke(app, [*base, "--report", str(notes)])
    assert res.exit_code == 2 and "not a policy-export report" in one_line(res.output), res.output
    assert notes.read_text() == '{"my": "notes"}\n'

    res = runner.invoke(app, [*base, "--report", str(report), "--junit", str(junit)])
    assert res.exit_code == 0, res.output
    assert is_our_report(report) and is_our_report(junit)
    report.write_text(report.read_text().replace('"passed"', '"stale"', 1))
    res = runner.invoke(app, [*base, "--report", str(report), "--junit", str(junit)])  # ours: replaced, no --force
    assert res.exit_code == 0, res.output
    assert json.loads(report.read_text())["status"] == "passed"

    res = runner.invoke(app, [*base, "--report", str(notes), "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads(notes.read_text())["status"] == "passed"


def test_report_recognition_covers_every_report_we_write(tmp_path):
    pytest.importorskip("matplotlib")
    from policy_export.bench.report import write_plot

    report = {
        "settings": {"batch_sizes": [1, 2], "threads": 1},
        "ceiling": {"floor_ms_per_sample": 0.1, "gflops": 10.0},
        "results": [
            {"backend": "x", "batch_size": b, "median_ms": 1.0, "min_ms": 0.9, "p90_ms": 1.1, "ms_per_sample": 1.0}
            for b in (1, 2)
        ],
        "machine": {"cpu": "test"},
    }
    plot = tmp_path / "bench.png"
    write_plot(report, plot)
    assert is_our_report(plot)
    foreign = tmp_path / "photo.png"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert not is_our_report(foreign)
    with pytest.raises(BadInputError, match="not a policy-export report"):
        write_plot(report, foreign)
    check_report_writable(foreign, force=True)  # --force allows it
    for text, ours in (
        ('{"schema": 1, "benchmark": "shim-overhead", "rows": []}', True),
        ('{"checkpoint": "c", "out_dir": "o", "formats": [], "steps": [], "exit_code": 0}', True),
        ('{"rows": []}', False),
        ("<?xml version='1.0'?>\n<testsuites name=\"pytest\"/>", False),
        ("plain text", False),
    ):
        f = tmp_path / "x.out"
        f.write_text(text)
        assert is_our_report(f) is ours, text


def _wait_for(predicate, deadline_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.05)


def test_sigterm_during_an_export_cleans_up_like_ctrl_c(small_ckpt, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "policy.onnx"
    exe = Path(sys.executable).with_name("policy-export")
    proc = subprocess.Popen(
        [str(exe), "onnx", "-c", str(small_ckpt), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The temp file exists from the start of the export until its rename: SIGTERM lands mid-export.
    _wait_for(lambda: any(p.name.endswith(".partial") for p in out_dir.iterdir()), 120, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert list(out_dir.iterdir()) == [], "no hidden .partial file and no half-written output"


def test_benchmark_commands_never_write_over_their_inputs(small_onnx, tmp_path):
    artifact = tmp_path / "policy.onnx"
    artifact.write_bytes(small_onnx.read_bytes())
    repo = tmp_path / "repo"
    (repo / "act").mkdir(parents=True)
    cases = [
        ["bench-realtime", "-a", artifact, "--json", artifact],
        ["bench-triton", "-a", artifact, "--json", artifact],
        ["bench-fleet", "--repo", repo, "--model", "act", "--json", repo / "act" / "fleet.json"],
    ]
    for args in cases:
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 2 and "inputs are never overwritten" in one_line(res.output), (args, res.output)
    assert digest(artifact) == digest(small_onnx) and list((repo / "act").iterdir()) == []
