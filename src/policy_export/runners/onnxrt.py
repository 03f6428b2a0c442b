"""ONNX Runtime runner (CPU, CUDA, or ORT's TensorRT execution provider)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from policy_export.artifacts import ArtifactInfo
from policy_export.cpu import cpu_info
from policy_export.enums import OrtProvider
from policy_export.errors import BadInputError, UnavailableError, first_line
from policy_export.runners.base import Runner

PROVIDERS: dict[str, list[str]] = {
    OrtProvider.CPU: ["CPUExecutionProvider"],
    OrtProvider.CUDA: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    OrtProvider.TENSORRT: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


log = logging.getLogger(__name__)


def saturation_warning(info: ArtifactInfo) -> str | None:
    """One line when an int8 QDQ artifact with full 8-bit weights (quantized on a CPU with VNNI) is opened on
    a CPU without it: there ONNX Runtime's u8s8 kernels use VPMADDUBSW, whose int16 pair sums saturate (the
    small test policy erred 0.083 of an action std against 0.026-0.047 with VNNI). ``quantize`` writes 7-bit
    weights on such CPUs, so the fix is to quantize on (a CPU like) the robot's."""
    meta = info.metadata
    quant = meta.quantization or {}
    if meta.precision != "int8" or quant.get("runtime") != "onnxruntime" or quant.get("weight_bits", 8) != 8:
        return None
    cpu = cpu_info()
    if cpu.vnni:
        return None
    return (
        f"{info.path}: int8 with 8-bit weights, quantized on a CPU with VNNI; this CPU ({cpu.model}) has none, "
        "where ONNX Runtime's u8s8 kernels saturate: re-quantize it here (policy-export quantize writes 7-bit weights)"
    )


#: Set to 1 on hosts whose cores do nothing but inference (see :func:`session_options`).
SPIN_ENV = "POLICY_EXPORT_ORT_SPIN"


def session_options(threads: int | None = None, *, spinning: bool | None = None) -> Any:
    """Session options for the ACT core on CPU; each choice was measured (BENCHMARKS.md, "what we tried").

    - Optimization level ALL, applied at load: NCHWc convolutions with the frozen batch norm
      folded in make batch 1 1.20x faster than level EXTENDED. Load takes ~0.1 s. The
      optimized graph is never saved or cached: at level ALL it holds ops specific to this
      CPU, and reusing it would save only ~50 ms per load.
    - ``intra_op`` = ``threads`` (the calling thread is one of them), ``inter_op`` = 1 and
      sequential execution: the graph is a chain, a second pool would only compete for cores.
    - Memory arena and memory pattern on (ORT's defaults, pinned here on purpose): without
      the arena batch 8 is 1.09x slower, with 80 ms of page faults per call.
    - Intra-op threads do not spin waiting for work unless ``spinning`` (or
      ``POLICY_EXPORT_ORT_SPIN=1``): spinning saves ~2% at batch 1 on otherwise idle cores
      but costs 1.2x when one other busy process shares them, as on a robot's computer.
    """
    import os

    import onnxruntime as ort

    if spinning is None:
        spinning = os.environ.get(SPIN_ENV, "") not in ("", "0", "false")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return so


class OnnxRuntimeRunner(Runner):
    """Runner for ``.onnx`` files. Fails loudly if the requested provider is missing."""

    def __init__(self, info: ArtifactInfo, provider: str = "cpu", threads: int | None = None) -> None:
        super().__init__(info)
        self.provider = provider
        self.threads = threads
        self.session: Any = None  # onnxruntime.InferenceSession (a pybind type without stubs)
        self.name = f"onnxruntime-{provider}"

    def activate(self) -> None:
        import onnxruntime as ort

        wanted = PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise UnavailableError(
                f"ONNX Runtime provider {wanted[0]} is not available here (have: {', '.join(available)}); "
                "install onnxruntime-gpu on a CUDA host or use --ort-provider cpu"
            )
        t0 = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(self.info.path), sess_options=session_options(self.threads), providers=wanted
            )
        except Exception as exc:  # ORT raises its own pybind types (InvalidGraph, Fail, ...) for a damaged file
            error = BadInputError if self.provider == "cpu" else UnavailableError
            raise error(
                f"{self.info.path}: ONNX Runtime ({wanted[0]}) cannot load it ({first_line(exc)}); re-export it"
            ) from exc
        self.load_seconds = time.perf_counter() - t0
        if self.provider == "cpu" and (warning := saturation_warning(self.info)):
            log.warning(warning)
        used = self.session.get_providers()[0]
        if used != wanted[0]:
            raise UnavailableError(
                f"ONNX Runtime fell back to {used} instead of {wanted[0]}; check the CUDA/TensorRT install"
            )

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None, "activate() first"
        names = [s.name for s in self.info.inputs]
        outs = self.session.run(None, dict(zip(names, self.ordered_inputs(feed), strict=True)))
        return {o.name: v for o, v in zip(self.session.get_outputs(), outs, strict=True)}

    def deactivate(self) -> None:
        self.session = None
