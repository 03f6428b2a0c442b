"""ONNX Runtime runner (CPU, CUDA, or ORT's TensorRT execution provider)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from policy_export.artifacts import ArtifactInfo
from policy_export.errors import UnavailableError
from policy_export.runners.base import Runner

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def session_options(threads: int | None = None) -> Any:
    """Session options that matter for this model on CPU (see BENCHMARKS.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


class OnnxRuntimeRunner(Runner):
    """Runner for ``.onnx`` files. Fails loudly if the requested provider is missing."""

    def __init__(self, info: ArtifactInfo, provider: str = "cpu", threads: int | None = None) -> None:
        super().__init__(info)
        self.provider = provider
        self.threads = threads
        self.session = None
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
        self.session = ort.InferenceSession(
            str(self.info.path), sess_options=session_options(self.threads), providers=wanted
        )
        self.load_seconds = time.perf_counter() - t0
        used = self.session.get_providers()[0]
        if used != wanted[0]:
            raise UnavailableError(
                f"ONNX Runtime fell back to {used} instead of {wanted[0]}; check the CUDA/TensorRT install"
            )

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None, "activate() first"
        outs = self.session.run(None, feed)
        return {o.name: v for o, v in zip(self.session.get_outputs(), outs, strict=True)}

    def deactivate(self) -> None:
        self.session = None
