"""``policy-export bench`` end to end on a small checkpoint: real workers, real runtimes, tiny runs.

Functional only: these tests check the report's structure and that its ratios are computed
from the same run's timings, never how fast anything is (timings belong to the benchmark,
not to unit tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app

runner = CliRunner()
FAST = ["--warmup", "1", "--ceiling-seconds", "0.1", "--max-background", "1"]
REQUIRED = ("backend", "batch_size", "median_ms", "p90_ms", "p99_ms", "throughput", "speedup_vs_eager")


@pytest.fixture(scope="module")
def bench_run(small_ckpt, small_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = [
        "bench",
        "-c",
        str(small_ckpt),
        "-a",
        str(small_onnx),
        "--batch-sizes",
        "1,2",
        "--threads",
        "1",
        "--iterations",
        "2",
        *FAST,
    ]
    result = runner.invoke(app, [*args, "--json", str(out / "r.json"), "--plot", str(out / "r.png")])
    return result, out


def test_bench_writes_results_for_every_backend_and_batch(bench_run, small_onnx):
    result, out = bench_run
    assert result.exit_code == 0, result.output
    report = json.loads((out / "r.json").read_text())
    rows = {(r["backend"], r["batch_size"]): r for r in report["results"]}
    assert set(rows) == {(b, n) for b in ("eager", small_onnx.name) for n in (1, 2)}
    for row in rows.values():
        assert all(row[k] is not None for k in REQUIRED), row
        assert row["iterations"] == 2
        assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] == pytest.approx(row["batch_size"] / row["median_ms"] * 1e3)
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 0
    assert report["skipped"] == []
    assert report["settings"]["threads"] == 1
    assert "eager" in result.output and small_onnx.name in result.output


def test_speedup_is_computed_from_the_same_run(bench_run, small_onnx):
    report = json.loads((bench_run[1] / "r.json").read_text())
    rows = {(r["backend"], r["batch_size"]): r for r in report["results"]}
    for batch in (1, 2):
        eager, onnx_row = rows["eager", batch], rows[small_onnx.name, batch]
        assert eager["speedup_vs_eager"] == pytest.approx(1.0)
        assert onnx_row["speedup_vs_eager"] == pytest.approx(eager["median_ms"] / onnx_row["median_ms"])
        # The artifact computed the same thing as LeRobot on the same inputs.
        assert onnx_row["max_abs_vs_eager"] < 1e-4


def test_ceiling_and_flops_are_measured(bench_run, small_onnx):
    report = json.loads((bench_run[1] / "r.json").read_text())
    ceiling = report["ceiling"]
    assert set(ceiling["by_library"]) == {"torch", "onnxruntime"}
    measured = [
        v for lib in ceiling["by_library"].values() for size in lib.values() for k, v in size.items() if "gflops" in k
    ]
    assert len(measured) == 2 * 2 * 2  # libraries x sizes x (start, end)
    assert ceiling["gflops"] == pytest.approx(max(measured))
    assert ceiling["core_gflop_per_sample"] > 0 and ceiling["core_gflop_by_module"]["backbone"] > 0
    floor = ceiling["core_gflop_per_sample"] / ceiling["gflops"] * 1e3
    assert ceiling["floor_ms_per_sample"] == pytest.approx(floor)
    for row in report["results"]:
        assert row["fraction_of_ceiling"] == pytest.approx(
            ceiling["core_gflop_per_sample"] * row["batch_size"] / (row["median_ms"] / 1e3) / ceiling["gflops"]
        )
    assert report["machine"]["versions"]["onnxruntime"]
    assert report["command"][0] == "policy-export"


def test_plot_is_a_png(bench_run):
    assert (bench_run[1] / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.heavy  # make test's time budget (~26 s on a 2-core AVX2 machine); nox -s heavy runs it
def test_unavailable_backends_are_skipped_with_a_reason(small_ckpt, small_onnx, tmp_path):
    # A TensorRT plan (with its metadata sidecar) on a machine without TensorRT, and the
    # ONNX file under the CUDA provider on a machine without CUDA.
    plan = tmp_path / "policy.plan"
    shutil.copy(small_onnx, plan)
    from policy_export.artifacts import inspect_artifact

    meta = json.loads(inspect_artifact(small_onnx).metadata.to_json())
    meta["artifact_kind"] = "tensorrt"
    (tmp_path / "policy.plan.json").write_text(json.dumps({"metadata": meta}))
    args = ["bench", "-c", str(small_ckpt), "-a", str(small_onnx), "-a", str(plan), "--batch-sizes", "1", *FAST]
    args += ["--iterations", "1", "--ort-provider", "cpu", "--ort-provider", "cuda", "--json", str(tmp_path / "r.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    skipped = {s["backend"]: s for s in report["skipped"]}
    assert set(skipped) == {f"{small_onnx.name}[cuda]", "policy.plan"}
    assert "CUDAExecutionProvider" in skipped[f"{small_onnx.name}[cuda]"]["reason"]
    assert all(s["status"] == "skipped" and s["reason"] for s in skipped.values())
    assert f"skipped {small_onnx.name}[cuda]: ONNX Runtime provider CUDAExecutionProvider" in result.output
    assert {r["backend"] for r in report["results"]} == {"eager", small_onnx.name}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-a", "missing.onnx"], "does not exist"),
        (["--batch-sizes", "0"], "positive integers"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_input_exits_2_before_any_work(small_ckpt, tmp_path, extra, message):
    result = runner.invoke(app, ["bench", "-c", str(small_ckpt), *extra, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "r.json").exists()


def test_help_lists_bench_without_importing_heavy_runtimes():
    code = (
        "import sys; from policy_export.cli.app import app; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'lerobot', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "bench" in runner.invoke(app, ["--help"]).output
    assert "--batch-sizes" in runner.invoke(app, ["bench", "--help"]).output


def test_a_missing_checkpoint_exits_2_with_one_line(tmp_path):
    missing = runner.invoke(app, ["bench", "-c", str(tmp_path / "nope"), "--json", str(tmp_path / "r.json")])
    assert missing.exit_code == 2
    assert "checkpoint directory does not exist" in missing.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.heavy  # make test's time budget (~25 s on a 2-core AVX2 machine: the eager worker loads first); nox -s heavy
def test_an_artifact_of_another_policy_exits_2_with_one_line(small_ckpt, multicam_onnx, tmp_path):
    other = runner.invoke(
        app, ["bench", "-c", str(small_ckpt), "-a", str(multicam_onnx), "--json", str(tmp_path / "r.json")]
    )
    assert other.exit_code == 2
    assert "does not match checkpoint" in other.output
    assert not (tmp_path / "r.json").exists()


def test_plot_without_matplotlib_fails_before_timing_and_keeps_the_extra_name(small_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the 'bench' extra were not installed
    result = runner.invoke(app, ["bench", "-c", str(small_ckpt), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2
    assert "pip install 'policy-export[bench]'" in result.output  # not eaten as Rich markup
    assert list(tmp_path.iterdir()) == []
