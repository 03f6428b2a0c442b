"""Convert an exported fp32 ONNX graph to fp16 inside, keeping float32 inputs and outputs.

Why keep the I/O float32: callers (verify, Triton configs, the robot-side client) then see
the same signature for both precisions, and the casts sit at the graph's edges where a GPU
runtime fuses them away. The conversion itself is ONNX Runtime's maintained converter
(``onnxruntime.transformers.float16``), not a hand-written one.

That converter appends its input casts at the end of the node list, so its output breaks
ONNX's topological-order rule (ORT runs it, ``onnx.checker`` rejects it); we re-sort the
graph with onnx_ir's maintained ``Graph.sort`` so the file passes the full checker.

On CPU fp16 is not faster (ORT computes most fp16 ops in fp32 after casts); its value is
on GPU hosts (TensorRT, CUDA). The default parity tolerance for fp16 is in
:mod:`policy_export.tolerances`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy_export.errors import PolicyExportError, first_line

if TYPE_CHECKING:
    import onnx


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a new ``onnx.ModelProto``: fp16 weights and arithmetic, float32 I/O, topologically sorted."""
    import onnx
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # the converter raises bare ValueError/AssertionError on graphs it cannot handle
        raise PolicyExportError(f"fp16 conversion failed ({first_line(exc)}); export with --precision fp32") from exc
    ir_model = ir.serde.deserialize_model(half)
    ir_model.graph.sort()
    out = ir.serde.serialize_model(ir_model)
    # Metadata/producer are set by the caller; keep the converter's opset imports and IR version.
    onnx.checker.check_model(out, full_check=True)
    return out
