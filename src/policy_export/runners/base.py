"""The runner interface and the artifact-kind dispatch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.artifacts import ArtifactInfo, inspect_artifact
from policy_export.errors import BadInputError


class Runner(ABC):
    """Runs one artifact. Heavy runtimes are imported and sessions created in ``activate``."""

    name: str = "runner"

    def __init__(self, info: ArtifactInfo) -> None:
        self.info = info
        self.load_seconds: float = 0.0

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def deactivate(self) -> None:
        """Release the session/engine."""

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()


def open_runner(path: str | Path, *, ort_provider: str = "cpu", threads: int | None = None) -> Runner:
    """Pick the runner for an artifact file (by content, not by extension alone)."""
    info = inspect_artifact(Path(path))
    if info.kind == "onnx":
        from policy_export.runners.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(info, provider=ort_provider, threads=threads)
    if info.kind == "torchscript":
        from policy_export.runners.torchscript import TorchScriptRunner

        return TorchScriptRunner(info, threads=threads)
    if info.kind == "tensorrt":
        from policy_export.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(info)
    raise BadInputError(f"{path}: no runner for artifact kind {info.kind!r}")
