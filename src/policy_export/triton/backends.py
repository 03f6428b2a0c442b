"""The Triton backends policy-export writes models for: which backend serves which artifact kind.

One table (:data:`BACKENDS`): the backend and platform names a ``config.pbtxt`` carries, the
file name the backend loads from a version folder, and the artifact kind it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy_export.errors import BadInputError


@dataclass(frozen=True)
class ServingBackend:
    """How Triton runs one artifact kind, and the file name that backend looks for."""

    key: str
    backend: str
    platform: str | None
    filename: str
    artifact_kind: str
    named_index: bool = False  # pytorch_libtorch's <name>__<index> convention


BACKENDS = {
    "onnxruntime": ServingBackend("onnxruntime", "onnxruntime", "onnxruntime_onnx", "model.onnx", "onnx"),
    "python": ServingBackend("python", "python", None, "model.onnx", "onnx"),
    "tensorrt": ServingBackend("tensorrt", "tensorrt", "tensorrt_plan", "model.plan", "tensorrt"),
    "pytorch": ServingBackend("pytorch", "pytorch", "pytorch_libtorch", "model.pt", "torchscript", named_index=True),
}
AUTO_BACKEND = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "torchscript": "pytorch"}


def backend_for(artifact_kind: str, choice: str = "auto") -> ServingBackend:
    if choice == "auto":
        return BACKENDS[AUTO_BACKEND[artifact_kind]]
    if choice not in BACKENDS:
        raise BadInputError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not {choice!r}")
    spec = BACKENDS[choice]
    if spec.artifact_kind != artifact_kind:
        raise BadInputError(
            f"--backend {choice} serves {spec.artifact_kind} files, but the artifact is {artifact_kind}; "
            f"drop --backend or export {spec.artifact_kind}"
        )
    return spec


def backend_from_config(platform: str, backend: str) -> ServingBackend | None:
    """The backend a config names (platform wins; both must agree when both are set)."""
    for spec in BACKENDS.values():
        if platform and platform == spec.platform:
            return spec if backend in ("", spec.backend) else None
    if not platform:
        return BACKENDS.get(backend)
    return None
