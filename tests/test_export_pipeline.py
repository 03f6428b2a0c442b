"""One verify for every artifact kind, and the all-formats `export` pipeline with its report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.export_report import PipelineReport, Step, parse_formats
from policy_export.tensorrt_host import tensorrt_unavailable_reason
from policy_export.tolerances import DEFAULT_ATOL

runner = CliRunner()
NO_TRT = tensorrt_unavailable_reason()


def _verify(ckpt, artifacts, *extra):
    args = ["verify", "-c", str(ckpt), "--batch-sizes", "1,3", "--samples", "1", "--seed", "8"]
    for a in artifacts:
        args += ["-a", str(a)]
    return runner.invoke(app, [*args, *extra])


def test_mixed_report_onnx_fp32_fp16_and_torchscript(
    small_ckpt, small_onnx, small_fp16_onnx, small_torchscript, tmp_path
):
    report = tmp_path / "mixed.json"
    res = _verify(small_ckpt, [small_onnx, small_fp16_onnx, small_torchscript], "--report", str(report))
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert data["status"] == "passed" and data["extra"]["default_atol"] == DEFAULT_ATOL
    rows = [(c["kind"], c["runner"], c["precision"], c["atol"], c["atol_source"], c["status"]) for c in data["checks"]]
    assert rows == [
        ("onnx", "onnxruntime-cpu", "fp32", 1e-4, "default fp32", "passed"),
        ("onnx", "onnxruntime-cpu", "fp16", DEFAULT_ATOL["fp16"], "default fp16", "passed"),
        ("torchscript", "torchscript-cpu", "fp32", 1e-4, "default fp32", "passed"),
    ]
    for c in data["checks"]:  # rows = artifact x batch size, each with the full error statistics
        assert [r["batch_size"] for r in c["results"]] == [1, 3]
        for r in c["results"]:
            assert {"max_abs", "mean_abs", "p99_abs", "max_rel", "cosine", "min_passing_atol"} <= set(r["stats"])
            assert r["stats"]["atol"] == c["atol"] and r["stats"]["passed"]
    # The table names every artifact and states the per-precision defaults.
    flat = " ".join(res.output.split())
    assert (
        "small-fp16.onnx" in flat and "small.pt" in flat and "default atol by precision: fp32 0.0001, fp16 0.01" in flat
    )

    # Per-artifact override: the fp16 file held to the fp32 tolerance fails; the others are untouched.
    res = _verify(
        small_ckpt,
        [small_onnx, small_fp16_onnx, small_torchscript],
        "--report",
        str(report),
        "--artifact-tolerance",
        f"{small_fp16_onnx.name}=1e-4",
    )
    assert res.exit_code == 1, res.output
    data = json.loads(report.read_text())
    assert [(c["status"], c["atol"], c["atol_source"]) for c in data["checks"]] == [
        ("passed", 1e-4, "default fp32"),
        ("failed", 1e-4, "--artifact-tolerance"),
        ("passed", 1e-4, "default fp32"),
    ]


def test_unavailable_ort_provider_is_skipped_never_passed(small_ckpt, small_onnx, small_torchscript, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has ONNX Runtime's CUDA provider")
    report = tmp_path / "cuda.json"
    res = _verify(small_ckpt, [small_onnx, small_torchscript], "--ort-provider", "cuda", "--report", str(report))
    assert res.exit_code == 2, res.output
    onnx_check, ts_check = json.loads(report.read_text())["checks"]
    assert onnx_check["status"] == "skipped" and "CUDAExecutionProvider is not available" in onnx_check["reason"]
    assert onnx_check["results"] == [] and ts_check["status"] == "passed"


def test_export_pipeline_all_formats(small_ckpt, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "export",
            "-c",
            str(small_ckpt),
            "--out-dir",
            str(out),
            "--formats",
            "tensorrt,torchscript,onnx",
            "--batch-sizes",
            "1,3",
            "--samples",
            "1",
            "--junit",
            str(tmp_path / "j.xml"),
        ],
    )
    data = json.loads((out / "export-report.json").read_text())
    steps = {(s["name"], s["target"]): s for s in data["steps"]}
    assert data["formats"] == ["onnx", "torchscript", "tensorrt"]
    assert [k for k in steps if k[0] in ("load", "wrap")] == [("load", "checkpoint"), ("wrap", "core")]
    for fmt, name in (("onnx", "policy.onnx"), ("torchscript", "policy.pt")):
        exp, ver = steps["export", fmt], steps["verify", fmt]
        assert exp["status"] == "passed" and exp["artifact"] == str(out / name) and (out / name).exists()
        assert exp["duration_s"] > 0 and exp["error"] is None and exp["details"]["size_bytes"] > 0
        assert ver["status"] == "passed" and ver["details"]["worst_max_abs"] <= 1e-4
    assert steps["wrap", "core"]["details"]["max_abs_vs_eager"] <= 1e-4
    assert [c["kind"] for c in data["verify"]["checks"]][:2] == ["onnx", "torchscript"]
    assert (tmp_path / "j.xml").exists()
    flat = " ".join(res.output.split())
    assert "export summary" in flat
    if NO_TRT:
        trt = steps["export", "tensorrt"]
        assert trt["status"] == "skipped" and trt["unavailable"] and "TensorRT is not available here" in trt["error"]
        assert ("verify", "tensorrt") not in steps and not (out / "policy.plan").exists()
        # Asked for and not built: the run is incomplete (exit 2), never green.
        assert res.exit_code == 2 and data["status"] == "incomplete" and data["exit_code"] == 2
        assert "--allow-unavailable" in flat
    else:
        assert res.exit_code == 0, res.output
        assert steps["verify", "tensorrt"]["status"] == "passed"


def test_export_pipeline_uint8_torchscript_only_is_green(multicam_ckpt, tmp_path):
    out = tmp_path / "frames"
    res = runner.invoke(
        app,
        [
            "export",
            "-c",
            str(multicam_ckpt),
            "--out-dir",
            str(out),
            "--formats",
            "torchscript",
            "--image-format",
            "uint8",
            "--batch-sizes",
            "2",
            "--samples",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "export-report.json").read_text())
    assert data["status"] == "passed" and data["image_format"] == "uint8"
    assert [(s["name"], s["target"], s["status"]) for s in data["steps"]] == [
        ("load", "checkpoint", "passed"),
        ("wrap", "core", "passed"),
        ("export", "torchscript", "passed"),
        ("verify", "torchscript", "passed"),
    ]
    assert data["verify"]["checks"][0]["image_format"] == "uint8"


def test_export_refuses_existing_artifacts_before_any_work(small_ckpt, tmp_path):
    (tmp_path / "policy.pt").write_bytes(b"user's file")
    res = runner.invoke(app, ["export", "-c", str(small_ckpt), "--out-dir", str(tmp_path), "--formats", "torchscript"])
    assert res.exit_code == 2 and "--force" in res.output
    assert (tmp_path / "policy.pt").read_bytes() == b"user's file" and not (tmp_path / "export-report.json").exists()


def test_export_bad_formats_and_missing_checkpoint(small_ckpt, tmp_path):
    res = runner.invoke(app, ["export", "-c", str(small_ckpt), "--out-dir", str(tmp_path), "--formats", "onnx,tflite"])
    assert res.exit_code == 2 and "choose from onnx, torchscript, tensorrt" in " ".join(res.output.split())
    out = tmp_path / "o"
    res = runner.invoke(app, ["export", "-c", str(tmp_path / "nope"), "--out-dir", str(out), "--formats", "onnx"])
    assert res.exit_code == 2
    data = json.loads((out / "export-report.json").read_text())
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("load", "error"), ("export", "skipped")]
    assert "does not exist" in data["steps"][0]["error"] and not (out / "policy.onnx").exists()


def test_parse_formats_orders_and_adds_onnx_for_tensorrt():
    assert parse_formats("torchscript, onnx") == ["onnx", "torchscript"]
    assert parse_formats("tensorrt") == ["onnx", "tensorrt"]


@pytest.mark.parametrize(
    ("statuses", "allow", "code"),
    [
        ([("passed", False)], False, 0),
        ([("passed", False), ("skipped", True)], False, 2),
        ([("passed", False), ("skipped", True)], True, 0),
        ([("passed", False), ("skipped", False)], True, 2),  # skipped for another reason: never allowed
        ([("error", False), ("skipped", True)], True, 2),
        ([("failed", False), ("skipped", True)], False, 1),
    ],
)
def test_pipeline_exit_code_rules(statuses, allow, code):
    report = PipelineReport("c", "o", ["onnx"], "float32", "fp32", [1], 1, allow_unavailable=allow)
    report.steps = [Step("export", f"f{i}", status=s, unavailable=u) for i, (s, u) in enumerate(statuses)]
    assert report.exit_code == code
