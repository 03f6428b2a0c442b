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
    #: The Python-backend model file written beside the artifact (a template), for ``backend: "python"``.
    python_model: str | None = None
    #: Other files the backend loads from the version folder, as (suffix of the artifact's file -> name here).
    companions: tuple[tuple[str, str], ...] = ()


_OV_WEIGHTS = ((".bin", "model.bin"),)
BACKENDS = {
    "onnxruntime": ServingBackend("onnxruntime", "onnxruntime", "onnxruntime_onnx", "model.onnx", "onnx"),
    "python": ServingBackend("python", "python", None, "model.onnx", "onnx", python_model="ort_model.py"),
    # Triton's native OpenVINO backend loads model.xml + model.bin and reads HINT_BF16 / PERFORMANCE_HINT /
    # NUM_STREAMS / INFERENCE_NUM_THREADS from the config parameters.
    "openvino": ServingBackend("openvino", "openvino", None, "model.xml", "openvino", companions=_OV_WEIGHTS),
    "python-openvino": ServingBackend(
        "python-openvino", "python", None, "model.xml", "openvino", python_model="ov_model.py", companions=_OV_WEIGHTS
    ),
    "tensorrt": ServingBackend("tensorrt", "tensorrt", "tensorrt_plan", "model.plan", "tensorrt"),
    "pytorch": ServingBackend("pytorch", "pytorch", "pytorch_libtorch", "model.pt", "torchscript", named_index=True),
}
AUTO_BACKEND = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "torchscript": "pytorch", "openvino": "openvino"}
#: ``--backend python`` per artifact kind (the Python model differs by runtime).
PYTHON_BACKEND = {"onnx": "python", "openvino": "python-openvino"}


def backend_for(artifact_kind: str, choice: str = "auto") -> ServingBackend:
    if choice == "auto":
        return BACKENDS[AUTO_BACKEND[artifact_kind]]
    if choice == "python" and artifact_kind in PYTHON_BACKEND:
        return BACKENDS[PYTHON_BACKEND[artifact_kind]]
    if choice not in BACKENDS:
        raise BadInputError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not {choice!r}")
    spec = BACKENDS[choice]
    if spec.artifact_kind != artifact_kind:
        raise BadInputError(
            f"--backend {choice} serves {spec.artifact_kind} files, but the artifact is {artifact_kind}; "
            f"drop --backend or export {spec.artifact_kind}"
        )
    return spec


def backend_from_config(platform: str, backend: str, artifact_kind: str = "") -> ServingBackend | None:
    """The backend a config names (platform wins; both must agree when both are set). A Python-backend
    model is told apart by the ``artifact_kind`` parameter policy-export writes into every config."""
    for spec in BACKENDS.values():
        if platform and platform == spec.platform:
            return spec if backend in ("", spec.backend) else None
    if not platform:
        if backend == "python" and artifact_kind in PYTHON_BACKEND:
            return BACKENDS[PYTHON_BACKEND[artifact_kind]]
        return BACKENDS.get(backend)
    return None
