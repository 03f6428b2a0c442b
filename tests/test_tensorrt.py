"""TensorRT plans: the no-GPU error here, input validation, and real builds on GPU hosts (``-m gpu``)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from policy_export.artifacts import inspect_artifact, tensorrt_sidecar
from policy_export.cli.app import app
from policy_export.errors import BadInputError
from policy_export.export.tensorrt import parse_size
from policy_export.tensorrt_host import plan_incompatibility, tensorrt_unavailable_reason
from policy_export.verify import verify_artifacts

runner = CliRunner()
UNAVAILABLE = tensorrt_unavailable_reason()
needs_trt = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"needs an NVIDIA GPU and TensorRT: {UNAVAILABLE}")
needs_no_trt = pytest.mark.skipif(
    UNAVAILABLE is None, reason="this host has a GPU and TensorRT, so the no-TensorRT path cannot happen here"
)


def _flat(text: str) -> str:
    return " ".join(text.split())


@needs_no_trt
def test_cli_without_gpu_or_tensorrt_exits_2_with_one_line(small_onnx, tmp_path):
    plan = tmp_path / "policy.plan"
    res = runner.invoke(app, ["tensorrt", "--onnx", str(small_onnx), "--output", str(plan), "--precision", "fp16"])
    assert res.exit_code == 2
    out = _flat(res.output)
    assert out.startswith("error: TensorRT is not available here:") and "Traceback" not in res.output
    assert "pip install tensorrt" in out
    assert not plan.exists() and not tensorrt_sidecar(plan).exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-batch", "8", "--max-batch", "2"], "--min-batch <= --opt-batch <= --max-batch"),
        (["--opt-batch", "0"], "--min-batch <= --opt-batch <= --max-batch"),
        (["--workspace", "lots"], "--workspace 'lots'"),
    ],
)
def test_cli_rejects_bad_options_before_building(small_onnx, tmp_path, args, message):
    res = runner.invoke(app, ["tensorrt", "--onnx", str(small_onnx), "--output", str(tmp_path / "x.plan"), *args])
    assert res.exit_code == 2 and message in _flat(res.output)


def test_cli_rejects_inputs_that_are_not_our_fp32_onnx(small_torchscript, small_fp16_onnx, tmp_path):
    res = runner.invoke(app, ["tensorrt", "--onnx", str(small_torchscript), "--output", str(tmp_path / "a.plan")])
    assert res.exit_code == 2 and "must be an ONNX file" in _flat(res.output)
    res = runner.invoke(app, ["tensorrt", "--onnx", str(small_fp16_onnx), "--output", str(tmp_path / "b.plan")])
    assert res.exit_code == 2 and "this ONNX file is fp16" in _flat(res.output)
    res = runner.invoke(app, ["tensorrt", "--onnx", str(tmp_path / "none.onnx"), "--output", str(tmp_path / "c.plan")])
    assert res.exit_code == 2 and "does not exist" in _flat(res.output)


def test_plan_incompatibility_names_what_differs():
    built = {"tensorrt_version": "10.9.0", "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
    assert plan_incompatibility(built, dict(built)) is None
    other = {"tensorrt_version": "10.13.3", "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    msg = plan_incompatibility(built, other)
    assert msg is not None
    for piece in ("TensorRT 10.9.0 (built) vs 10.13.3 (here)", "GPU NVIDIA A100", "compute capability 8.0 (built)"):
        assert piece in msg
    assert plan_incompatibility(built, {**built, "tensorrt_version": "10.9.1"}) == (
        "TensorRT 10.9.0 (built) vs 10.9.1 (here)"
    )


def test_parse_size():
    assert parse_size("4G") == 4 * 2**30 and parse_size("512MiB") == 512 * 2**20 and parse_size("1000") == 1000
    for bad in ("", "0", "-1G", "4T"):
        with pytest.raises(BadInputError, match="--workspace"):
            parse_size(bad)


def test_quick_check_gates_in_the_normalized_action_space(small_loaded, small_onnx):
    """Issue 19 item 8 for the TensorRT builder: the plan vs ONNX Runtime in the network's own space,
    with the scale the ONNX file recorded at export; robot units only for a file without one."""
    import numpy as np

    from policy_export.action_space import ActionScale
    from policy_export.compare import ParityError
    from policy_export.enums import Precision
    from policy_export.export.onnx import onnx_action_scale
    from policy_export.export.tensorrt import gate_plan_outputs

    recorded = onnx_action_scale(small_onnx)
    assert recorded is not None
    np.testing.assert_array_equal(recorded.scale, small_loaded.action_scale.scale)
    np.testing.assert_array_equal(recorded.center, small_loaded.action_scale.center)
    # pusht-like pixels: a std of 100 makes float32 rounding 5e-3 px, 5e-5 in the network's space
    pixels = ActionScale("MEAN_STD", np.full(2, 256.0), np.full(2, 100.0))
    want = np.random.default_rng(0).normal(256, 100, (2, 5, 2)).astype(np.float32)
    got = want + np.float32(5e-3)
    assert gate_plan_outputs(want, got, pixels, Precision.FP32, 1, "p.onnx") == pytest.approx(5e-5, rel=0.05)
    with pytest.raises(ParityError, match=r"robot units.*> 0\.001"):
        gate_plan_outputs(want, got, None, Precision.FP32, 1, "p.onnx")
    with pytest.raises(ParityError, match=r"normalized action space.*0\.002 > 0\.001"):  # a real error still fails
        gate_plan_outputs(want, want + np.float32(0.2), pixels, Precision.FP32, 4, "p.onnx")


@needs_no_trt
def test_verify_reports_a_plan_it_cannot_run_as_skipped(small_loaded, small_onnx, tmp_path):
    """A plan copied to a machine without TensorRT: verify says why it was skipped and never passes it."""
    plan = tmp_path / "policy.plan"
    plan.write_bytes(b"not run here")
    meta = json.loads(inspect_artifact(small_onnx).metadata.to_json()) | {"artifact_kind": "tensorrt"}
    tensorrt_sidecar(plan).write_text(json.dumps({"metadata": meta, "tensorrt": {"precision": "fp32"}}))
    report = verify_artifacts(small_loaded, [small_onnx, plan], batch_sizes=[1], samples=1)
    onnx_check, plan_check = report.checks
    assert onnx_check.status == "passed"
    assert plan_check.kind == "tensorrt" and plan_check.status == "skipped" and not plan_check.results
    assert "TensorRT is not available here" in plan_check.reason
    assert report.exit_code == 2 and report.status == "incomplete"


# --- GPU host only: `nox -s gpu` (pytest -m gpu) -------------------------------------------------


@pytest.fixture(scope="module")
def small_plan(small_onnx, tmp_path_factory):
    from policy_export.export.tensorrt import build_tensorrt

    if UNAVAILABLE is not None:
        pytest.skip(f"needs an NVIDIA GPU and TensorRT: {UNAVAILABLE}")
    out = tmp_path_factory.mktemp("plan") / "small.plan"
    cache = out.with_name("timing.cache")
    build_tensorrt(small_onnx, out, precision="fp32", min_batch=1, opt_batch=2, max_batch=4, timing_cache=cache)
    return out


@pytest.mark.gpu
@needs_trt
def test_fp32_plan_matches_lerobot_eager(small_plan, small_loaded):
    side = json.loads(tensorrt_sidecar(small_plan).read_text())
    rec = side["tensorrt"]
    assert rec["precision"] == "fp32" and rec["tf32"] is False and rec["profile"] == {"min": 1, "opt": 2, "max": 4}
    assert rec["normalization_hash"] == small_loaded.spec.norm_hash and len(rec["onnx_sha256"]) == 64
    assert rec["gpu_name"] and rec["compute_capability"] and rec["tensorrt_version"]
    assert small_plan.with_name("timing.cache").exists()
    info = inspect_artifact(small_plan)
    assert info.kind == "tensorrt" and info.metadata.precision == "fp32"
    report = verify_artifacts(small_loaded, [small_plan], batch_sizes=[1, 4], samples=2, seed=4)
    assert report.exit_code == 0, report.checks[0]


@pytest.mark.gpu
@needs_trt
def test_fp16_plan_matches_at_fp16_tolerance(small_onnx, small_loaded, tmp_path):
    out = tmp_path / "small16.plan"
    res = runner.invoke(
        app,
        ["tensorrt", "--onnx", str(small_onnx), "-o", str(out), "--precision", "fp16", "--max-batch", "4"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(tensorrt_sidecar(out).read_text())["tensorrt"]["fp16_converted_from_fp32_onnx"] is True
    report = verify_artifacts(small_loaded, [out], batch_sizes=[1, 3], samples=2, seed=4)
    assert report.exit_code == 0 and report.checks[0].precision == "fp16", report.checks[0]


@pytest.mark.gpu
@needs_trt
def test_plan_from_other_tensorrt_version_is_refused(small_plan, small_loaded, tmp_path):
    moved = tmp_path / "moved.plan"
    shutil.copy(small_plan, moved)
    side = json.loads(tensorrt_sidecar(small_plan).read_text())
    side["tensorrt"]["tensorrt_version"] = "0.0.1"
    tensorrt_sidecar(moved).write_text(json.dumps(side))
    check = verify_artifacts(small_loaded, [moved], batch_sizes=[1], samples=1).checks[0]
    assert check.status == "skipped" and "built for another GPU/TensorRT" in check.reason
    assert "TensorRT 0.0.1 (built)" in check.reason


@pytest.mark.gpu
@needs_trt
def test_batch_outside_profile_is_a_clear_error(small_plan, small_loaded):
    with pytest.raises(BadInputError, match="outside the plan's profile"):
        verify_artifacts(small_loaded, [small_plan], batch_sizes=[8], samples=1)


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_onnxruntime_gpu_providers_match_lerobot_eager(small_onnx, small_loaded, provider):
    import onnxruntime as ort

    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if wanted not in ort.get_available_providers():
        pytest.skip(
            f"{wanted} not available (install onnxruntime-gpu on a CUDA host; have {ort.get_available_providers()})"
        )
    report = verify_artifacts(small_loaded, [small_onnx], batch_sizes=[1, 4], samples=2, ort_provider=provider)
    assert report.exit_code == 0 and report.checks[0].runner == f"onnxruntime-{provider}", report.checks[0]


def test_verify_rejects_plan_without_or_with_broken_sidecar(small_ckpt, tmp_path):
    plan = tmp_path / "lonely.plan"
    plan.write_bytes(b"engine bytes")
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(plan)])
    assert res.exit_code == 2 and "has no sidecar lonely.plan.json" in _flat(res.output)
    tensorrt_sidecar(plan).write_text("{not json")
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(plan)])
    assert res.exit_code == 2 and "sidecar lonely.plan.json is unreadable" in _flat(res.output)
    assert "Traceback" not in res.output


def test_gpu_check_needs_neither_torch_nor_tensorrt():
    """A robot host with numpy + tensorrt only: the plan runner's host check must not import torch."""
    from test_runtime_shim import run_blocked

    proc = run_blocked(
        """
        from policy_export.tensorrt_host import cuda_device0, tensorrt_unavailable_reason
        reason = tensorrt_unavailable_reason()
        assert cuda_device0() is None and "no CUDA GPU is visible" in reason, reason
        assert "torch" not in sys.modules
        print("ok")
        """,
        ("torch", "lerobot"),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
