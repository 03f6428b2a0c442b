"""fp16 ONNX: a valid file with float32 I/O, half precision inside, and a tolerance that is real."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from policy_export.artifacts import inspect_artifact
from policy_export.tolerances import DEFAULT_ATOL
from policy_export.verify import verify_artifacts


def test_fp16_onnx_passes_full_checker_and_keeps_float32_io(small_fp16_onnx, small_onnx):
    onnx.checker.check_model(str(small_fp16_onnx), full_check=True)  # topologically sorted, types consistent
    model = onnx.load(str(small_fp16_onnx))
    for vi in [*model.graph.input, *model.graph.output]:
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT, vi.name
        dim0 = vi.type.tensor_type.shape.dim[0]
        assert dim0.dim_param and not dim0.dim_value, f"{vi.name}: batch axis is frozen"
    # The network itself is half precision: the bulk of the weights are float16.
    sizes: dict[int, int] = {}
    for init in model.graph.initializer:
        sizes[init.data_type] = sizes.get(init.data_type, 0) + int(np.prod(init.dims))
    assert sizes.get(TensorProto.FLOAT16, 0) > 0.99 * sum(sizes.values()), sizes
    assert small_fp16_onnx.stat().st_size < 0.6 * small_onnx.stat().st_size
    info = inspect_artifact(small_fp16_onnx)
    assert info.metadata.precision == "fp16"
    assert [i.dtype for i in info.inputs] == ["float", "float"] and info.outputs[0].dtype == "float"


def test_fp16_parity_passes_default_tolerance_and_fails_fp32_tolerance(small_loaded, small_fp16_onnx):
    report = verify_artifacts(small_loaded, [small_fp16_onnx], batch_sizes=[1, 3], samples=2, seed=5)
    check = report.checks[0]
    assert report.exit_code == 0, check
    assert check.atol == DEFAULT_ATOL["fp16"] and check.atol_source == "default fp16"
    worst = max(r.stats.max_abs for r in check.results)
    # Real half-precision error (not a disguised fp32 graph), well inside the default.
    assert 1e-4 < worst < DEFAULT_ATOL["fp16"] / 3, worst
    strict = verify_artifacts(small_loaded, [small_fp16_onnx], batch_sizes=[1, 3], samples=2, seed=5, atol=1e-4)
    assert strict.exit_code == 1 and strict.checks[0].status == "failed"
    assert all(not r.stats.passed for r in strict.checks[0].results)
