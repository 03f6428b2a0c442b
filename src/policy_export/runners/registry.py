"""Which runner runs which artifact kind: the one place that knows every runner.

The base class (:mod:`.base`) knows none of its subclasses; each runner module imports the
base, and this registry imports the runners (lazily: each pulls in its heavy runtime only
when an artifact of its kind is opened).
"""

from __future__ import annotations

from pathlib import Path

from policy_export.artifacts import inspect_artifact
from policy_export.errors import BadInputError
from policy_export.runners.base import Runner


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
    if info.kind == "openvino":
        from policy_export.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(info, threads=threads)
    raise BadInputError(f"{path}: no runner for artifact kind {info.kind!r}")
