"""The all-formats export pipeline: load -> wrap -> export (each format) -> verify.

Modelled on Triton Model Navigator: an explicit sequence of steps, each producing an
artifact and a status, all recorded in one machine-readable report
(``<out-dir>/export-report.json``) that is written even when a step fails, so CI can
show *which* step broke and why.

The record and its status rules (how steps add up to exit 0, 1 or 2) are in
:mod:`policy_export.export_report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.enums import ImageFormat, Precision, Status
from policy_export.errors import (
    BadInputError,
    ParityError,
    PolicyExportError,
)
from policy_export.export_report import (
    FILE_NAMES,
    REPORT_NAME,
    PipelineReport,
    Recorder,
    Step,
    StepCallback,
    parse_formats,
)
from policy_export.fsutil import check_report_writable, check_writable, write_report_atomic
from policy_export.input_files import files_read

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint

#: The wrap step's check of the in-memory core against LeRobot eager (fp32, same as verify).
WRAP_CHECK_BATCH = 2


def run_export_pipeline(
    checkpoint: Path,
    out_dir: Path,
    *,
    formats: list[str],
    image_format: ImageFormat = ImageFormat.FLOAT32,
    precision: Precision = Precision.FP32,
    batch_sizes: list[int] | None = None,
    samples: int = 2,
    max_batch: int = 16,
    allow_unavailable: bool = False,
    force: bool = False,
    on_step: StepCallback | None = None,
    on_verify_progress: Callable[[], None] | None = None,
) -> PipelineReport:
    """Run every step, write ``<out_dir>/export-report.json``, return the report (never raises on a step's failure)."""
    sizes = list(batch_sizes or [1, 4])
    if any(b < 1 for b in sizes) or samples < 1 or max_batch < 1:
        raise BadInputError("--batch-sizes, --samples and --max-batch must be positive integers")
    formats = parse_formats(",".join(formats))
    paths = {f: out_dir / FILE_NAMES[f] for f in formats}
    inputs = files_read(checkpoint)
    for fmt, path in paths.items():  # refuse to clobber before any slow work
        check_writable(path, force, f"{fmt} artifact", inputs=inputs)
    check_report_writable(out_dir / REPORT_NAME, force, "export report", inputs=inputs)
    report = PipelineReport(
        checkpoint=str(checkpoint),
        out_dir=str(out_dir),
        formats=formats,
        image_format=image_format,
        precision=precision,
        batch_sizes=sizes,
        samples=samples,
        allow_unavailable=allow_unavailable,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    t0 = time.perf_counter()
    try:
        _run(report, Recorder(report, on_step), checkpoint, paths, max_batch, force, on_verify_progress)
    finally:
        report.duration_s = round(time.perf_counter() - t0, 3)
        write_report_atomic(
            out_dir / REPORT_NAME,
            json.dumps(report.to_dict(), indent=2, default=str) + "\n",
            force,
            inputs=inputs,
            what="export report",
        )
    return report


def _run(
    report: PipelineReport,
    rec: Recorder,
    checkpoint: Path,
    paths: dict[str, Path],
    max_batch: int,
    force: bool,
    on_verify_progress: Callable[[], None] | None,
) -> None:
    from policy_export.checkpoint import load_checkpoint
    from policy_export.verify import check_run_size

    ckpt = None
    with rec.step("load", "checkpoint") as loading:
        loaded = load_checkpoint(checkpoint)
        loading.details = {"policy_type": loaded.spec.policy_type, "inputs": loaded.spec.input_names}
        check_run_size(loaded.spec, report.batch_sizes, report.samples)  # before the exports, not after
        ckpt = loaded
    if ckpt is None:
        for fmt in paths:
            rec.skip("export", fmt, "the load step failed (see its error)")
        return
    with rec.step("wrap", "core") as wrapping:
        wrapping.details = _wrap_check(ckpt, report.image_format)
    if wrapping.status != "passed":
        for fmt in paths:
            rec.skip("export", fmt, "the stateless core does not match LeRobot eager; see the wrap step")
        return

    built: dict[str, Path] = {}
    for fmt, path in paths.items():
        if fmt == "tensorrt":
            _export_tensorrt(rec, report, paths, built, max_batch, force)
            continue
        with rec.step("export", fmt, path) as st:
            st.details = _export_one(fmt, ckpt, path, report, force)
            built[fmt] = path

    if not built:
        rec.skip("verify", "all", "nothing was exported")
        return
    _verify(rec, report, ckpt, built, on_verify_progress)


def _wrap_check(ckpt: LoadedCheckpoint, image_format: ImageFormat) -> dict[str, Any]:
    """The in-memory core vs LeRobot eager on one seeded batch: catches a wrapper bug before any export."""
    import torch

    from policy_export.compare import parity_gate
    from policy_export.core import build_core
    from policy_export.families import eager_chunk
    from policy_export.inputs import checkpoint_inputs
    from policy_export.tolerances import default_atol

    core = build_core(ckpt, image_format=image_format)
    feed = checkpoint_inputs(ckpt, WRAP_CHECK_BATCH, np.random.default_rng(99), image_format)
    with torch.no_grad():
        got = core(*(torch.from_numpy(feed[n]) for n in ckpt.spec.input_names)).numpy()
    want = eager_chunk(ckpt, feed, image_format)
    atol = default_atol("fp32")
    scale = ckpt.action_scale  # in the policy's normalized action space, as verify gates (issue 19)
    stats = parity_gate(
        scale.normalize(want),
        scale.normalize(got),
        atol,
        what="stateless core differs from LeRobot eager before any export (normalized action space)",
    )
    return {"max_abs_vs_eager": stats.max_abs, "batch": WRAP_CHECK_BATCH, "atol": atol, "space": "normalized"}


def _export_one(fmt: str, ckpt: LoadedCheckpoint, path: Path, report: PipelineReport, force: bool) -> dict[str, Any]:
    if fmt == "onnx":
        from policy_export.export.onnx import export_onnx

        res = export_onnx(ckpt, path, force=force, image_format=report.image_format, precision=report.precision)
        details: dict[str, Any] = {
            "exporter": res.exporter,
            "opset": res.opset,
            "nodes": res.nodes,
            "precision": report.precision,
            "quick_check_max_abs": res.quick_check_max_abs,
        }
        if res.fallback_reason:
            details["fallback_reason"] = res.fallback_reason
        if res.external_data is not None:
            details["external_data"] = str(res.external_data)
    else:
        from policy_export.export.torchscript import export_torchscript

        ts = export_torchscript(ckpt, path, force=force, image_format=report.image_format)
        details = {
            "exporter": "torch.jit.trace",
            "precision": "fp32",
            "quick_check_max_abs": ts.quick_check_max_abs,
            "checked_batches": list(ts.checked_batches),
        }
    details["size_bytes"] = path.stat().st_size
    return details


def _export_tensorrt(
    rec: Recorder,
    report: PipelineReport,
    paths: dict[str, Path],
    built: dict[str, Path],
    max_batch: int,
    force: bool,
) -> None:
    from policy_export.export.tensorrt import build_tensorrt
    from policy_export.tensorrt_host import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        rec.skip("export", "tensorrt", reason, unavailable=True)
        return
    if "onnx" not in built:
        rec.skip("export", "tensorrt", "the ONNX export it is built from did not succeed")
        return
    path = paths["tensorrt"]
    top = max(report.batch_sizes)
    with rec.step("export", "tensorrt", path) as st:
        res = build_tensorrt(
            built["onnx"],
            path,
            precision=report.precision,
            min_batch=1,
            opt_batch=top,
            max_batch=max(max_batch, top),
            force=force,
        )
        st.details = {
            "precision": res.precision,
            "profile": res.profile,
            "build_seconds": res.build_seconds,
            "quick_check_max_abs_vs_onnxruntime": res.quick_check_max_abs,
            "sidecar": str(res.sidecar),
            **res.host,
            "size_bytes": path.stat().st_size,
        }
        built["tensorrt"] = path


def _verify(
    rec: Recorder,
    report: PipelineReport,
    ckpt: LoadedCheckpoint,
    built: dict[str, Path],
    on_verify_progress: Callable[[], None] | None,
) -> None:
    from policy_export.verify import verify_artifacts

    fmts = list(built)
    steps = [Step("verify", f, artifact=str(built[f])) for f in fmts]
    for st in steps:
        report.steps.append(st)
        rec.notify(st)
    t0 = time.perf_counter()
    try:
        result = verify_artifacts(
            ckpt,
            [built[f] for f in fmts],
            batch_sizes=report.batch_sizes,
            samples=report.samples,
            progress=on_verify_progress,
        )
    except PolicyExportError as exc:
        for st in steps:
            st.status, st.error = (Status.FAILED if isinstance(exc, ParityError) else Status.ERROR), str(exc)
            rec.notify(st)
        return
    elapsed = round(time.perf_counter() - t0, 3)
    report.verify = result
    for st, check in zip(steps, result.checks, strict=True):
        st.duration_s = elapsed  # one shared run (shared LeRobot references); per-artifact time is in details
        st.status = check.status
        st.error = check.reason or None
        st.unavailable = check.status == Status.SKIPPED
        worst = max((r.stats.max_abs for r in check.results), default=float("nan"))
        st.details = {
            "runner": check.runner,
            "precision": check.precision,
            "atol": check.atol,
            "atol_source": check.atol_source,
            "worst_max_abs": worst,
            "batch_sizes": [r.batch_size for r in check.results],
            "infer_ms_median": {r.batch_size: r.infer_ms_median for r in check.results},
            "warnings": check.warnings,
        }
        if check.status == Status.FAILED:
            st.error = f"max abs error {worst:.3g} > atol {check.atol:g}"
        rec.notify(st)
