"""``policy-export bench-realtime``: the command works end to end on tiny runs (a few steps).

Figures are not checked (a benchmark, not a test): the JSON has exactly the documented
schema, the counts add up, and bad input is one line with exit 2 before any work.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from policy_export.bench.realtime import MERGE_ROW_KEYS, ROW_KEYS
from policy_export.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ensemble_onnx(ensemble_ckpt, tmp_path_factory):
    from policy_export.checkpoint import load_checkpoint
    from policy_export.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("bench_rt_ensemble") / "ensemble.onnx"
    export_onnx(load_checkpoint(ensemble_ckpt), path)
    return path


@pytest.mark.parametrize(
    ("artifact", "merge"),
    [("small_onnx", "replace"), pytest.param("ensemble_onnx", "ensemble", marks=pytest.mark.heavy)],  # ~25 s
)
def test_bench_realtime_writes_both_clients_with_the_exact_schema(artifact, merge, request, tmp_path):
    path = request.getfixturevalue(artifact)
    out = tmp_path / "rt.json"
    res = runner.invoke(
        app,
        ["bench-realtime", "-a", str(path), "--fps", "20", "--steps", "12", "--sim-steps", "30", "--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert list(report) == ["results", "merges", "max_fps"]
    # An ACT model has no RTC inputs: replace and ensemble, at the same (measured) latency.
    assert [r["merge"] for r in report["merges"]] == ["replace", "ensemble"]
    for r in report["merges"]:
        assert tuple(r) == MERGE_ROW_KEYS and r["steps"] == 30 and r["chunks"] >= 1
        assert r["latency_ms"] == report["merges"][0]["latency_ms"] > 0
    assert report["max_fps"]["ours"]["fps"] > 0 and "eager" not in report["max_fps"]
    rows = report["results"]
    assert [r["client"] for r in rows] == ["sync", "realtime"]
    for row in rows:
        assert tuple(row) == ROW_KEYS
        assert row["merge"] == merge and row["fps"] == 20 and row["steps"] == 12
        assert 0 <= row["missed_ticks"] <= 12
        assert 0 <= row["select_ms_p50"] <= row["select_ms_p99"] <= row["select_ms_max"]
    sync, rt = rows
    assert sync["chunk_ms_p50"] > 0 and sync["streaming_fraction"] is None
    assert rt["chunk_ms_p50"] > 0 and 0 <= rt["streaming_fraction"] <= 1
    assert 0 <= rt["fallback_ticks"] <= 12 and rt["stale_dropped"] >= 0
    assert "bench-realtime" in res.output and "realtime" in res.output


def test_merge_ensemble_on_a_queue_model_is_one_line(small_onnx):
    res = runner.invoke(app, ["bench-realtime", "-a", str(small_onnx), "--steps", "2", "--merge", "ensemble"])
    assert res.exit_code == 2 and "no temporal ensembling coefficient" in res.output and "--merge replace" in res.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fps", "0"], "--fps must be > 0"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--triton-url", "127.0.0.1:1"], "--triton-url and --model go together"),
        (["--merge", "average"], "average"),
        (["--sim-steps", "1"], "--sim-steps must be >= 2"),
        (["--eager-ms", "-3"], "--eager-ms must be a latency"),
    ],
)
def test_bad_input_exits_2_before_any_work(small_onnx, extra, message):
    res = runner.invoke(app, ["bench-realtime", "-a", str(small_onnx), *extra])
    assert res.exit_code == 2 and message in res.output, res.output


def test_missing_artifact_is_one_line(tmp_path):
    res = runner.invoke(app, ["bench-realtime", "-a", str(tmp_path / "nope.onnx")])
    assert res.exit_code == 2 and "no such file" in res.output


def _busy_children() -> list[int]:
    """Live busy processes started by this process (BUSY_CODE's own text in their command line)."""
    import os
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"os.getppid() == parent" in cmdline:
            found.append(int(proc.name))
    return found


def test_stress_runs_busy_processes_beside_the_loop_and_reaps_them(small_onnx, tmp_path):
    from policy_export.bench.realtime import busy_processes

    with pytest.raises(RuntimeError, match="boom"), busy_processes(2, max_s=60) as procs:
        assert len(_busy_children()) == 2 and all(p.poll() is None for p in procs)
        raise RuntimeError("boom")
    assert _busy_children() == [] and all(p.returncode is not None for p in procs)  # killed and reaped

    out = tmp_path / "rt.json"
    args = ["bench-realtime", "-a", str(small_onnx), "--fps", "20", "--steps", "10", "--stress", "2"]
    res = runner.invoke(app, [*args, "--no-compare-merges", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["results"]
    assert [r["stress"] for r in rows] == [2, 2] and all(r["chunk_ms_p50"] > 0 for r in rows)
    assert "2 busy processes beside the loop" in res.output
    assert _busy_children() == []
    res = runner.invoke(app, [*args[:-1], "-1"])
    assert res.exit_code == 2 and "--stress must be between 0 and 64" in res.output
