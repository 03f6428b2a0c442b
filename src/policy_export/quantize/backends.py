"""The two ways to a reduced-precision CPU artifact: OpenVINO IR (NNCF) and ONNX QDQ (ONNX Runtime).

Each backend turns the fp32 ONNX file plus calibration feeds into a file of its own format in a
temporary place; :mod:`policy_export.quantize.run` measures it, records the metadata and
publishes it. Heavy imports (openvino, nncf, onnxruntime.quantization) happen inside.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import PolicyExportError, UnavailableError, first_line
from policy_export.spec import METADATA_KEY, ArtifactMetadata

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF and ONNX Runtime's tools print progress bars and notices: the CLI's contract is its own lines."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _require_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise UnavailableError(
            "--runtime openvino needs openvino and nncf; pip install 'policy-export[cpu-lowp]'"
        ) from exc
    return ov


def nodes_in_scopes(fp32_onnx: Path, scopes: tuple[str, ...]) -> list[str]:
    """Names of the ONNX nodes inside the given module scopes: read from the dynamo exporter's
    ``pkg.torch.onnx.name_scopes`` node metadata, or from the legacy exporter's ``/scope/...`` node names.

    Both runtimes keep these names (OpenVINO as friendly names, ONNX Runtime's pre-processing as is).
    """
    if not scopes:
        return []
    import onnx

    names = []
    for node in onnx.load(str(fp32_onnx), load_external_data=False).graph.node:
        path = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(f"'{s}'" in path or f"'{s}." in path or node.name.startswith(f"/{s}/") for s in scopes):
            names.append(node.name)
    return names


def openvino_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says this CPU does natively (``BF16``, ``INT8``, ...)."""
    ov = _require_openvino()
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def openvino_ir(
    fp32_onnx: Path, precision: str, feeds: list[dict[str, np.ndarray]], xml_out: Path, keep_float: list[str]
) -> None:
    """fp32 ONNX -> OpenVINO IR: NNCF int8 post-training quantization, or the fp32 graph for bf16
    (the bf16 hint is applied when the runner compiles it; the weights stay fp32 on disk).

    NNCF runs with its transformer preset (SmoothQuant, activations asymmetric where they are not
    ReLU outputs): on the demo policy it halved the worst error of the default preset (2.1% vs 5.5% of
    an action std, held-out frames) at the same speed; ``keep_float`` nodes stay in float.
    """
    ov = _require_openvino()
    model = ov.convert_model(str(fp32_onnx))
    if precision == "int8":
        os.environ.setdefault("NNCF_TELEMETRY", "0")  # no network here, and nothing to report
        try:
            import nncf
        except ImportError as exc:
            raise UnavailableError(
                "int8 with --runtime openvino needs nncf; pip install 'policy-export[cpu-lowp]'"
            ) from exc
        try:
            with _quiet():
                model = nncf.quantize(
                    model,
                    nncf.Dataset(feeds),
                    subset_size=len(feeds),
                    model_type=nncf.ModelType.TRANSFORMER,
                    # Bias correction over the whole calibration set, not its fast one-batch estimate: on the
                    # demo policy it took the worst error from 2.12% to 2.03% of the std (layer 0 in float).
                    fast_bias_correction=False,
                    ignored_scope=nncf.IgnoredScope(
                        names=keep_float, patterns=[f"{re.escape(n)}/.*" for n in keep_float], validate=False
                    ),
                )
        except Exception as exc:  # NNCF raises its own types from deep inside graph passes
            raise PolicyExportError(f"NNCF int8 quantization failed: {first_line(exc)}") from exc
    ov.save_model(model, str(xml_out), compress_to_fp16=False)


def set_openvino_metadata(xml_path: Path, meta: ArtifactMetadata) -> None:
    """Embed the metadata as ``rt_info/policy_export`` (readable from the XML alone, like ONNX metadata_props)."""
    ov = _require_openvino()
    core = ov.Core()
    model = core.read_model(str(xml_path))
    model.set_rt_info(meta.to_json(), [METADATA_KEY])
    tmp = xml_path.with_name(xml_path.stem + ".meta.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp, xml_path)
    os.replace(tmp.with_suffix(".bin"), xml_path.with_suffix(".bin"))


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not used by MinMax calibration, part of the protocol
        pass


def onnx_qdq(
    fp32_onnx: Path,
    precision: str,
    feeds: list[dict[str, np.ndarray]],
    onnx_out: Path,
    keep_float: list[str],
    reduce_range: bool = False,
) -> None:
    """fp32 ONNX -> int8 QDQ ONNX with ONNX Runtime's static quantization: per-channel int8 weights,
    uint8 activations (the u8s8 pair ONNX Runtime's x86 VNNI kernels take), MinMax calibration.

    Only Conv, MatMul and Gemm are quantized (where the FLOPs are); ``keep_float`` nodes stay in float.
    ``reduce_range`` (7-bit weights) for CPUs without VNNI: there ONNX Runtime's u8s8 kernels use
    VPMADDUBSW, whose int16 pair sums saturate with full-range weights (the small test policy erred
    0.083 of an action std on an AVX2-only Zen 3 against 0.026-0.047 with VNNI).
    """
    if precision != "int8":
        raise UnavailableError(
            "--precision bf16 --runtime onnxruntime: ONNX Runtime's CPU execution provider has no bfloat16 "
            "MatMul/Conv kernels on x86 (its bf16 fast-math GEMM is ARM64-only); use --runtime openvino"
        )
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Reader, CalibrationDataReader):
        pass

    pre = onnx_out.with_name(onnx_out.stem + ".pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=False)
            quantize_static(
                str(pre),
                str(onnx_out),
                Reader(feeds),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                nodes_to_exclude=keep_float,
                reduce_range=reduce_range,
            )
    except Exception as exc:
        raise PolicyExportError(f"ONNX Runtime int8 quantization failed: {first_line(exc)}") from exc
    finally:
        pre.unlink(missing_ok=True)


def set_onnx_metadata(onnx_path: Path, meta: ArtifactMetadata) -> None:
    import onnx

    from policy_export.export.onnx import _embed_metadata, onnx_action_scale

    scale = onnx_action_scale(onnx_path)  # kept: the TensorRT builder's quick check reads it
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    _embed_metadata(model, meta, scale)
    onnx.save(model, str(onnx_path))


def metadata_json(meta: ArtifactMetadata) -> dict[str, Any]:
    return json.loads(meta.to_json())
