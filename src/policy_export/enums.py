"""The closed sets of words the toolchain passes between layers, as ``StrEnum``s.

Each was a bare string re-checked in several layers (CLI, exporters, metadata, runtime).
``StrEnum`` members *are* strings (``Precision.FP16 == "fp16"``, ``json.dumps`` writes
``"fp16"``), so metadata written before these existed reads back unchanged and callers may
still pass the plain word. Plain Python: the robot-side runtime imports it.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """Numeric precision of the exported network (inputs and outputs stay float32)."""

    FP32 = "fp32"
    FP16 = "fp16"
    #: OpenVINO's inference precision hint (bf16 kernels); the weights stay fp32 in the file.
    BF16 = "bf16"
    #: Post-training quantized (int8 weights and activations): OpenVINO IR via NNCF, or ONNX QDQ.
    INT8 = "int8"


class ExportPrecision(StrEnum):
    """What ``onnx`` / ``export`` / ``tensorrt`` write (bf16 and int8 come from ``quantize``, which calibrates)."""

    FP32 = "fp32"
    FP16 = "fp16"


class LowPrecision(StrEnum):
    """What ``quantize`` writes from an fp32 ONNX artifact."""

    BF16 = "bf16"
    INT8 = "int8"


class QuantRuntime(StrEnum):
    """Which runtime a reduced-precision artifact is written for."""

    OPENVINO = "openvino"
    ONNXRUNTIME = "onnxruntime"


class ImageFormat(StrEnum):
    """What the core takes per camera: float CHW in [0, 1], or raw uint8 HWC frames."""

    FLOAT32 = "float32"
    UINT8 = "uint8"


class ArtifactKind(StrEnum):
    """What an artifact file is, detected from its content."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TENSORRT = "tensorrt"
    #: OpenVINO IR (``model.xml`` + ``model.bin``), written by ``policy-export quantize``.
    OPENVINO = "openvino"


class OrtProvider(StrEnum):
    """Which ONNX Runtime execution provider runs an ``.onnx`` artifact (falling back to the ones after it)."""

    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class Status(StrEnum):
    """The state of a check, a pipeline step or a whole run (reports, JSON, the CLI's last line)."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"
    #: A run whose exit code is neither 0 nor 1: something asked for was not done.
    INCOMPLETE = "incomplete"


class ToleranceSpace(StrEnum):
    """Where an action tolerance is measured.

    ``normalized``: the policy's own action space (what the network computes, before the
    postprocessor's unnormalization), where 1e-4 means the same for pixels, radians and
    millimetres; ``robot``: the units the robot receives (absolute, the meaning before issue 19).
    """

    NORMALIZED = "normalized"
    ROBOT = "robot"
