"""Tensor data types: the one table from what an artifact reports to numpy and to Triton.

ONNX reports ``float`` / ``double``, metadata and numpy say ``float32`` / ``float64``, and
Triton's wire protocol says ``FP32`` (``TYPE_FP32`` in ``config.pbtxt``). Every layer that
checks or converts a tensor type (runners, the Triton config writer, the Triton client)
goes through this table, so a new type is added in one place. Plain Python: the robot-side
runtime imports it.
"""

from __future__ import annotations

#: Artifact dtype string (ONNX's lower-cased TensorProto name, or metadata's) -> numpy dtype name.
NUMPY_NAMES = {
    "float": "float32",
    "float32": "float32",
    "float16": "float16",
    "double": "float64",
    "float64": "float64",
    "uint8": "uint8",
    "int8": "int8",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}

#: numpy dtype name -> Triton wire type (``config.pbtxt`` spells it ``TYPE_<wire type>``).
TRITON_WIRE_TYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "uint8": "UINT8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}


def numpy_name(dtype: str) -> str:
    """The numpy name of an artifact dtype string (unknown strings are returned as they are)."""
    return NUMPY_NAMES.get(dtype, dtype)


def triton_wire_type(dtype: str) -> str | None:
    """``FP32`` for ``float`` / ``float32``, ...; None for a type Triton has no name for here."""
    return TRITON_WIRE_TYPES.get(numpy_name(dtype))


def triton_config_type(dtype: str) -> str | None:
    """``TYPE_FP32`` for ``float`` / ``float32``, ... (the ``config.pbtxt`` enum name); None if unknown."""
    wire = triton_wire_type(dtype)
    return None if wire is None else f"TYPE_{wire}"
