"""OpenVINO runner for the IR ``policy-export quantize`` writes (CPU plugin).

The inference precision is part of the artifact, not of the caller: a bf16 artifact is the
fp32 IR plus OpenVINO's ``INFERENCE_PRECISION_HINT`` = bf16, recorded in its metadata
(``quantization.inference_precision``), so verify, bench, the robot runtime and Triton all run
the same arithmetic. An int8 IR is pinned to f32 for its non-quantized ops, so that it does not
silently pick up bf16 on CPUs where OpenVINO defaults to it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from policy_export.artifacts import ArtifactInfo
from policy_export.errors import BadInputError, UnavailableError, first_line
from policy_export.runners.base import Runner


def compile_config(info: ArtifactInfo, threads: int | None) -> dict[str, Any]:
    """The CPU plugin settings for this artifact: its recorded precision hint, latency mode, one stream."""
    hint = str(info.metadata.quantization.get("inference_precision", "f32"))
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoRunner(Runner):
    """Runs an OpenVINO IR on the CPU plugin with the precision hint recorded in it."""

    def __init__(self, info: ArtifactInfo, threads: int | None = None) -> None:
        super().__init__(info)
        self.threads = threads
        self.name = f"openvino-cpu-{info.metadata.quantization.get('inference_precision', 'f32')}"
        self._compiled: Any = None  # openvino.CompiledModel
        self._request: Any = None

    def activate(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise UnavailableError(
                f"{self.info.path.name}: running an OpenVINO IR needs openvino; pip install 'policy-export[cpu-lowp]' "
                "(or just openvino on a robot host)"
            ) from exc
        t0 = time.perf_counter()
        try:
            self._compiled = ov.Core().compile_model(
                str(self.info.path), "CPU", compile_config(self.info, self.threads)
            )
        except RuntimeError as exc:
            raise BadInputError(
                f"{self.info.path}: OpenVINO cannot load it ({first_line(exc)}); re-run policy-export quantize"
            ) from exc
        self._request = self._compiled.create_infer_request()
        self.load_seconds = time.perf_counter() - t0

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._request is not None, "activate() first"
        names = [s.name for s in self.info.inputs]
        result = self._request.infer(dict(zip(names, self.ordered_inputs(feed), strict=True)))
        return {"action_chunk": np.array(result[self._compiled.output("action_chunk")], dtype=np.float32, copy=True)}

    def deactivate(self) -> None:
        self._request = None
        self._compiled = None
