"""Build a TensorRT engine (plan) from an exported ONNX file, through Polygraphy's loaders.

Design choices, and why:
- Polygraphy (``NetworkFromOnnxBytes`` -> ``CreateConfig`` -> ``EngineBytesFromNetwork``)
  instead of hand-written builder boilerplate: it is NVIDIA's maintained wrapper and
  handles profiles, memory pools and timing caches across TensorRT versions.
- Strongly typed networks: precision is a property of the ONNX graph, not a builder hint.
  TensorRT deprecated the weakly typed FP16 flag in 10.12 and removed it in 11.x, so an
  fp16 plan is built from the fp16 ONNX (our maintained converter, float32 I/O kept),
  converting a given fp32 ONNX on the fly. fp32 builds clear TF32 so fp32 means fp32.
- A plan only runs on the GPU model and TensorRT version it was built with; the JSON
  sidecar ``<plan>.json`` records both (plus precision, profile, ONNX sha256 and the
  normalization hash) and the runner refuses a mismatch with one clear line.
- tensorrt and polygraphy are imported lazily, and Polygraphy's dependency auto-install
  is forced off: a build tool must never pip-install behind the user's back.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from policy_export.action_space import ActionScale
from policy_export.artifacts import inspect_artifact, tensorrt_sidecar
from policy_export.enums import ArtifactKind, Precision
from policy_export.errors import BadInputError, PolicyExportError, UnavailableError
from policy_export.fsutil import atomic_output, check_writable
from policy_export.input_files import artifact_files
from policy_export.spec import ArtifactMetadata
from policy_export.tensorrt_host import disable_polygraphy_autoinstall, host_info, tensorrt_unavailable_reason
from policy_export.versions import library_versions

SIDECAR_SCHEMA = 1
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


@dataclass
class TensorRTBuildResult:
    path: Path
    sidecar: Path
    precision: Precision
    profile: dict[str, int]
    build_seconds: float
    quick_check_max_abs: float
    host: dict[str, str]


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1048576"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise BadInputError(f"--workspace {text!r}: give a size like 4G, 512M or a byte count")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def build_tensorrt(
    onnx_path: Path,
    output: Path,
    *,
    precision: Precision = Precision.FP32,
    min_batch: int = 1,
    opt_batch: int = 4,
    max_batch: int = 16,
    workspace: int | None = None,
    timing_cache: Path | None = None,
    force: bool = False,
    quick_check: bool = True,
    action_scale: ActionScale | None = None,
) -> TensorRTBuildResult:
    """Validate inputs, check this host can build, build, quick-check, write plan + sidecar atomically.

    The quick check gates in the policy's normalized action space, as the ONNX exporter's and verify do:
    ``action_scale`` (the pipeline passes the checkpoint's), else the one the ONNX file recorded at export;
    a file from before that was recorded is checked in robot units, and the sidecar says which.
    """
    if precision not in tuple(Precision):
        raise BadInputError(f"--precision must be fp32 or fp16, not {precision!r}")
    precision = Precision(precision)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise BadInputError(
            f"batch profile must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch, got {min_batch}/{opt_batch}/{max_batch}"
        )
    info = inspect_artifact(onnx_path)
    if info.kind != ArtifactKind.ONNX:
        raise BadInputError(
            f"{onnx_path}: --onnx must be an ONNX file written by policy-export, not a {info.kind} file"
        )
    meta = info.metadata
    if meta.precision == Precision.FP16 and precision == Precision.FP32:
        raise BadInputError(
            f"{onnx_path}: this ONNX file is fp16; build an fp32 plan from the fp32 ONNX, or pass --precision fp16"
        )
    sidecar = tensorrt_sidecar(output)
    inputs = [*artifact_files(onnx_path), *([timing_cache] if timing_cache else [])]
    check_writable(output, force, "TensorRT plan", inputs)
    check_writable(sidecar, force, "TensorRT sidecar", inputs)
    reason = tensorrt_unavailable_reason()
    if reason:
        raise UnavailableError(reason)

    onnx_bytes = onnx_path.read_bytes()
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()  # of the file as given, before any fp16 conversion
    converted = precision == Precision.FP16 and meta.precision != Precision.FP16
    if converted:
        onnx_bytes = _fp16_onnx_bytes(onnx_bytes)
    profile = {"min": min_batch, "opt": opt_batch, "max": max_batch}
    shapes = {s.name: tuple(int(d) for d in s.shape[1:]) for s in info.inputs}
    t0 = time.perf_counter()
    plan = _build_plan(onnx_bytes, shapes, profile, workspace, timing_cache)
    build_seconds = time.perf_counter() - t0
    if action_scale is None:
        from policy_export.export.onnx import onnx_action_scale

        action_scale = onnx_action_scale(onnx_path)
    space = "normalized" if action_scale is not None else "robot"
    max_abs = _quick_check(plan, onnx_path, meta, precision, profile, action_scale) if quick_check else float("nan")

    host = host_info()
    plan_meta = ArtifactMetadata(
        spec=meta.spec,
        artifact_kind=ArtifactKind.TENSORRT,
        image_format=meta.image_format,
        precision=precision,
        exporter=f"tensorrt {host['tensorrt_version']} via polygraphy (from {meta.exporter} ONNX)",
        opset=meta.opset,
        versions={**meta.versions, **library_versions("polygraphy", "tensorrt")},
    )
    record = {
        "schema": SIDECAR_SCHEMA,
        "metadata": json.loads(plan_meta.to_json()),
        "tensorrt": {
            **host,
            "precision": precision,
            "strongly_typed": True,
            "tf32": False,
            "fp16_converted_from_fp32_onnx": converted,
            "profile": profile,
            "input_shapes": {n: {k: [b, *shape] for k, b in profile.items()} for n, shape in shapes.items()},
            "workspace_bytes": workspace,
            "timing_cache": str(timing_cache) if timing_cache else None,
            "onnx_file": onnx_path.name,
            "onnx_sha256": onnx_sha256,
            "normalization_hash": meta.spec.norm_hash,
            "plan_sha256": hashlib.sha256(plan).hexdigest(),
            "build_seconds": round(build_seconds, 2),
            "quick_check_max_abs_vs_onnxruntime": max_abs,
            "quick_check_space": space,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    # Sidecar renamed first: a plan that appears is never without its record.
    with atomic_output(output, force=force, what="TensorRT plan", inputs=inputs) as tmp_plan:
        tmp_plan.write_bytes(plan)
        with atomic_output(sidecar, force=force, what="TensorRT sidecar", inputs=inputs) as tmp_side:
            tmp_side.write_text(json.dumps(record, indent=2) + "\n")
    return TensorRTBuildResult(output, sidecar, precision, profile, build_seconds, max_abs, host)


def _fp16_onnx_bytes(onnx_bytes: bytes) -> bytes:
    import onnx

    from policy_export.export.fp16 import convert_to_fp16

    return convert_to_fp16(onnx.load_from_string(onnx_bytes)).SerializeToString()


def _build_plan(
    onnx_bytes: bytes,
    shapes: dict[str, tuple[int, ...]],
    profile: dict[str, int],
    workspace: int | None,
    timing_cache: Path | None,
) -> bytes:
    disable_polygraphy_autoinstall()
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxBytes, Profile
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    trt_profile = Profile()
    for name, shape in shapes.items():
        trt_profile.add(name, (profile["min"], *shape), (profile["opt"], *shape), (profile["max"], *shape))
    cache = str(timing_cache) if timing_cache else None
    if timing_cache:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        network = NetworkFromOnnxBytes(onnx_bytes, strongly_typed=True)
        config = CreateConfig(
            tf32=False,
            profiles=[trt_profile],
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace} if workspace else None,
            load_timing_cache=cache,
        )
        return bytes(EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)())
    except PolygraphyException as exc:
        raise PolicyExportError(f"TensorRT build failed: {str(exc).strip().splitlines()[-1]}") from exc


def _quick_check(
    plan: bytes,
    onnx_path: Path,
    meta: ArtifactMetadata,
    precision: Precision,
    profile: dict[str, int],
    scale: ActionScale | None,
) -> float:
    """The fresh plan vs ONNX Runtime (CPU) on the source ONNX at the profile's min and max batch."""
    import onnxruntime as ort
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from policy_export.inputs import random_inputs

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with TrtRunner(EngineFromBytes(plan)) as trt_runner:
        for batch in sorted({profile["min"], profile["max"]}):
            feed = random_inputs(meta.spec, batch, np.random.default_rng(batch), image_format=meta.image_format)
            want = sess.run(["action_chunk"], feed)[0]
            got = np.asarray(trt_runner.infer(feed)["action_chunk"], np.float32)
            worst = max(worst, gate_plan_outputs(want, got, scale, precision, batch, onnx_path.name))
    return worst


def gate_plan_outputs(
    want: np.ndarray, got: np.ndarray, scale: ActionScale | None, precision: Precision, batch: int, onnx_name: str
) -> float:
    """The quick check's gate: max abs difference in the normalized action space (robot units without a scale).

    Why normalized: an absolute tolerance in robot units means different things per robot (float32
    rounding near 500 pixels is ~3e-5, near 0.1 rad ~7e-9), so an fp32 plan of a pusht policy would
    be refused for rounding alone; the network's own space makes 1e-3 one setting for every robot.
    """
    from policy_export.compare import parity_gate
    from policy_export.tolerances import quick_check_atol

    space = "robot units"
    if scale is not None:
        want, got, space = scale.normalize(want), scale.normalize(got), "normalized action space"
    return parity_gate(
        want,
        got,
        quick_check_atol(precision),
        what=f"TensorRT plan disagrees with ONNX Runtime on {onnx_name} right after the build at batch {batch} ({space})",
        then="nothing was written",
    ).max_abs
