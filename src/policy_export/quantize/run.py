"""Quantize an fp32 ONNX artifact for this CPU: refuse what cannot pay, calibrate, measure, record, publish.

The artifact records the CPU it was calibrated and measured on, and what was measured there
(latency against the fp32 artifact in ONNX Runtime, interleaved in one run, and the error per
action dimension as a fraction of the dataset's action std on held-out frames), so a number
read later from the file says where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.action_error import DimError, action_std, per_dim_errors, worst_frac_std
from policy_export.artifacts import check_compatible, inspect_artifact, openvino_weights
from policy_export.cpu import CpuInfo, cpu_info, precision_gain_warning
from policy_export.enums import ArtifactKind, ImageFormat, LowPrecision, Precision, QuantRuntime
from policy_export.errors import BadInputError, UnavailableError
from policy_export.families import family_for
from policy_export.frames import synthetic_samples
from policy_export.fsutil import check_writable
from policy_export.input_files import files_read
from policy_export.quantize import backends
from policy_export.spec import ArtifactMetadata
from policy_export.tolerances import DEFAULT_TOLERANCE_STD
from policy_export.versions import library_versions

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint

#: bf16 is a precision hint only OpenVINO takes on CPUs; int8's default is the family's (``Family.int8_runtime``).
BF16_RUNTIME = QuantRuntime.OPENVINO
DEFAULT_SAMPLES = 32
MAX_SAMPLES = 1000
#: Held-out frames for the accuracy figure recorded in the artifact, and timed calls per side.
HELD_OUT = 2
TIMED_CALLS = 5

#: A closed-loop check of the staged artifact (``policy-export eval``'s band for reduced precision), run before
#: it is published: whether it behaved like eager within the band, and the figures to record in the artifact.
#: Passed in by the command (quantization sits beside the simulators in the layers, not above them).
ClosedLoopGate = Callable[[Path], tuple[bool, dict[str, Any]]]


@dataclass
class QuantizeResult:
    path: Path
    precision: str
    runtime: str
    calibration: dict[str, Any]
    cpu: CpuInfo
    fp32_ms: float
    quantized_ms: float
    dims: list[DimError] = field(default_factory=list)
    tolerance_std: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: What the closed-loop gate recorded (None: not run); outside its band nothing is published.
    closed_loop: dict[str, Any] | None = None
    written: bool = True

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.quantized_ms if self.quantized_ms > 0 else float("nan")

    @property
    def worst_frac_std(self) -> float:
        return worst_frac_std(self.dims)

    @property
    def passed(self) -> bool:
        return self.worst_frac_std <= self.tolerance_std


def check_runtime_can(precision: str, runtime: str, cpu: CpuInfo) -> list[str]:
    """Refuse (exit 2) a precision the runtime cannot do on this CPU, naming what is missing; return warnings."""
    if precision == LowPrecision.BF16:
        if runtime == QuantRuntime.ONNXRUNTIME:
            raise UnavailableError(
                "--precision bf16 --runtime onnxruntime: ONNX Runtime's CPU execution provider has no bfloat16 "
                "MatMul/Conv kernels on x86 (its bf16 fast-math GEMM is ARM64-only); use --runtime openvino"
            )
        if not cpu.bf16:
            raise UnavailableError(
                f"--precision bf16: this CPU ({cpu.model}) has neither avx512_bf16 nor amx_bf16, so OpenVINO would run "
                "it as fp32 (no gain); use --precision int8, or quantize on the robot's CPU"
            )
        if "BF16" not in backends.openvino_capabilities():
            raise UnavailableError("--precision bf16: OpenVINO's CPU plugin does not offer BF16 on this machine")
    warning = precision_gain_warning(precision, cpu)
    return [warning] if warning else []


def output_for(runtime: str, output: Path, defaulted_for: str | None = None) -> None:
    """``defaulted_for`` (e.g. "int8 of act") when the runtime is the default, not the user's word: the
    error then says so and names both fixes."""
    want = ".xml" if runtime == QuantRuntime.OPENVINO else ".onnx"
    if output.suffix != want:
        writes = "an OpenVINO IR (.xml + .bin)" if want == ".xml" else "ONNX"
        if defaulted_for is None:
            raise BadInputError(f"{output}: --runtime {runtime} writes {writes}; name the output *{want}")
        other = QuantRuntime.ONNXRUNTIME if runtime == QuantRuntime.OPENVINO else QuantRuntime.OPENVINO
        raise BadInputError(
            f"{output}: {defaulted_for} defaults to --runtime {runtime} (the faster here at equal accuracy), "
            f"which writes {writes}; name the output *{want}, or pass --runtime {other}"
        )


def check_source(artifact: Path) -> ArtifactMetadata:
    """Only fp32 ONNX written by this tool: its metadata is what the quantized file inherits."""
    info = inspect_artifact(artifact)  # one line for a missing/foreign/damaged file
    meta = info.metadata
    if info.kind != ArtifactKind.ONNX or meta.precision != Precision.FP32:
        raise BadInputError(
            f"{artifact}: quantize takes an fp32 ONNX artifact from policy-export onnx; this is "
            f"{info.kind} {meta.precision}; export one with `policy-export onnx --checkpoint DIR --output fp32.onnx`"
        )
    if meta.image_format != ImageFormat.FLOAT32:
        raise BadInputError(
            f"{artifact}: quantize takes float32-image artifacts (this one takes {meta.image_format} frames); "
            "export with --image-format float32"
        )
    return meta


def _call_ms(fn: Any, feed: dict[str, np.ndarray]) -> float:
    t0 = time.perf_counter()
    fn(feed)
    return (time.perf_counter() - t0) * 1e3


def measure(
    fp32: Path, candidate: Path, feeds: list[dict[str, np.ndarray]], std: np.ndarray, calls: int = TIMED_CALLS
) -> tuple[float, float, list[DimError]]:
    """fp32 (ONNX Runtime) vs candidate: median batch-1 latency, interleaved call by call, and per-dimension error."""
    from policy_export.runners import open_runner

    threads = os.cpu_count() or 1
    with open_runner(fp32, threads=threads) as ref, open_runner(candidate, threads=threads) as cand:
        refs = [ref.infer(f)["action_chunk"] for f in feeds]
        outs = [cand.infer(f)["action_chunk"] for f in feeds]  # also the warm-up of each side
        t_ref, t_cand = [], []
        for i in range(calls):
            feed = feeds[i % len(feeds)]
            t_ref.append(_call_ms(ref.infer, feed))
            t_cand.append(_call_ms(cand.infer, feed))
    return float(np.median(t_ref)), float(np.median(t_cand)), per_dim_errors(np.stack(refs), np.stack(outs), std)


def quantize(
    ckpt: LoadedCheckpoint,
    artifact: Path,
    output: Path,
    *,
    precision: str,
    runtime: str | None = None,
    calibration: Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    tolerance_std: float | None = None,
    force: bool = False,
    seed: int = 0,
    progress: Any = None,
    closed_loop: ClosedLoopGate | None = None,
) -> QuantizeResult:
    """Write ``output`` (an OpenVINO IR or a QDQ ONNX file) from the fp32 ``artifact``; nothing half-written on failure.

    With ``closed_loop``, the staged artifact must also behave like eager in closed-loop episodes within the
    band, or nothing is written (``written`` False): actions a few percent of a std off can still turn an
    episode, and that is what a robot would do with it."""
    precision = LowPrecision(precision)
    family = family_for(ckpt.spec.policy_type)
    chosen = runtime is not None
    if runtime is None:
        runtime = family.int8_runtime if precision == LowPrecision.INT8 else BF16_RUNTIME
    runtime = QuantRuntime(runtime)
    if not 1 <= samples <= MAX_SAMPLES:
        raise BadInputError(f"--calibration-samples {samples}: give 1 to {MAX_SAMPLES} (NNCF's default subset is 300)")
    output_for(runtime, output, None if chosen else f"{precision} of {ckpt.spec.policy_type}")
    meta = check_source(artifact)
    warnings = check_compatible(inspect_artifact(artifact), ckpt.spec, ckpt.path)
    cpu = cpu_info()
    warnings += check_runtime_can(precision, runtime, cpu)
    inputs = files_read(ckpt.path, [artifact])
    check_writable(output, force, "output", inputs)
    if runtime == QuantRuntime.OPENVINO:
        check_writable(openvino_weights(output), force, "output's weights file", inputs)
    say = progress or (lambda _msg: None)

    feeds: list[dict[str, np.ndarray]]
    source: dict[str, Any]
    if precision == LowPrecision.BF16:  # a precision hint, nothing to calibrate
        feeds, source = [], {"source": "none", "frames": "bf16 needs no calibration"}
        if calibration is not None:
            warnings.append(f"--calibration {calibration}: not used, bf16 needs no calibration")
    elif calibration is not None:
        from policy_export.quantize.dataset import dataset_samples

        feeds, source = dataset_samples(calibration, ckpt, samples, seed)
    else:
        feeds = list(synthetic_samples(ckpt.spec, ckpt.input_stats, samples, seed))
        source = {
            "source": "checkpoint statistics",
            "frames": "synthetic (smooth fields + flat objects, dataset mean/std)",
        }
    source["samples"] = len(feeds)
    held_out = list(synthetic_samples(ckpt.spec, ckpt.input_stats, HELD_OUT, seed + 1000))
    std = action_std(ckpt.output_stats, ckpt.spec.action_key, ckpt.spec.action_dim)
    tol = DEFAULT_TOLERANCE_STD[precision] if tolerance_std is None else tolerance_std

    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        tmp = staging / output.name
        say(f"converting to {precision} for {runtime}" + (f", calibrating on {len(feeds)} samples" if feeds else ""))
        scopes = family.quantize_float_scopes
        if runtime == QuantRuntime.OPENVINO:
            scopes = (*scopes, *family.openvino_float_scopes)
        keep_float = backends.nodes_in_scopes(artifact, scopes) if precision == LowPrecision.INT8 else []
        extra: dict[str, Any] = {}
        if runtime == QuantRuntime.OPENVINO:
            backends.openvino_ir(artifact, precision, feeds, tmp, keep_float)
        else:
            backends.onnx_qdq(artifact, precision, feeds, tmp, keep_float, reduce_range=not cpu.vnni)
            extra = {"weight_bits": 8 if cpu.vnni else 7}  # see backends.onnx_qdq's reduce_range
        record: dict[str, Any] = {
            "runtime": str(runtime),
            "inference_precision": "bf16" if precision == LowPrecision.BF16 else "f32",
            "calibration": source,
            "float_scopes": list(scopes) if keep_float else [],
            "source_artifact": artifact.name,
            "cpu": cpu.record(),
            **extra,
        }
        new_meta = dataclasses.replace(
            meta,
            artifact_kind=ArtifactKind.OPENVINO if runtime == QuantRuntime.OPENVINO else ArtifactKind.ONNX,
            precision=Precision(precision),
            versions={**meta.versions, **library_versions("openvino", "nncf")},
            quantization=record,
        )
        _write_metadata(runtime, tmp, new_meta)  # the runner reads the precision hint from it
        say("measuring against the fp32 artifact (interleaved, batch 1)")
        fp32_ms, q_ms, dims = measure(artifact, tmp, held_out, std)
        record["measured"] = {
            "batch": 1,
            "fp32_onnxruntime_ms": round(fp32_ms, 3),
            "ms": round(q_ms, 3),
            "speedup": round(fp32_ms / q_ms, 3) if q_ms > 0 else None,
            "held_out_frames": HELD_OUT,
            "max_frac_action_std": round(worst_frac_std(dims), 6),
            "tolerance_std": tol,
            "load_average": list(os.getloadavg()),
        }
        closed: dict[str, Any] | None = None
        if closed_loop is not None:
            say("closed-loop episodes, eager vs the quantized artifact")
            passed, closed = closed_loop(tmp)
            record["closed_loop"] = closed
            if not passed:
                return QuantizeResult(
                    output, precision, runtime, source, cpu, fp32_ms, q_ms, dims, tol, warnings, closed, written=False
                )
        _write_metadata(runtime, tmp, dataclasses.replace(new_meta, quantization=record))
        # The robot's host needs what the fp32 artifact had beside it (a VLA's tokenizer), as export writes it.
        sidecars = family.write_sidecars(ckpt, tmp)
        files = [tmp] + ([openvino_weights(tmp)] if runtime == QuantRuntime.OPENVINO else []) + sidecars
        for f in reversed(files):  # sidecars and weights first: the artifact appears last, when all is in place
            os.chmod(f, 0o644)
            os.replace(f, output.with_name(f.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return QuantizeResult(output, precision, runtime, source, cpu, fp32_ms, q_ms, dims, tol, warnings, closed)


def _write_metadata(runtime: str, path: Path, meta: ArtifactMetadata) -> None:
    if runtime == QuantRuntime.OPENVINO:
        backends.set_openvino_metadata(path, meta)
    else:
        backends.set_onnx_metadata(path, meta)
