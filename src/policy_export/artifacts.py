"""Recognise an exported artifact and read its embedded metadata and I/O signature.

Kind detection looks at the file's content (zip archive = TorchScript, ONNX protobuf,
TensorRT plan with its JSON sidecar), so a mislabelled extension cannot send a file to
the wrong runtime.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_export.declarations import family_problems
from policy_export.dtypes import numpy_name
from policy_export.enums import ArtifactKind
from policy_export.errors import BadInputError, UnavailableError
from policy_export.spec import METADATA_KEY, ArtifactMetadata, PolicySpec

TORCHSCRIPT_EXTRA = "policy_export.json"


@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass
class ArtifactInfo:
    path: Path
    kind: ArtifactKind
    metadata: ArtifactMetadata
    inputs: list[TensorSig] = field(default_factory=list)
    outputs: list[TensorSig] = field(default_factory=list)


def tensorrt_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_tensorrt_sidecar(plan: Path) -> dict[str, Any]:
    """The JSON record written beside a TensorRT plan (``metadata`` and the ``tensorrt`` build record).

    The one reader of the sidecar: a missing or damaged one is a one-line error naming it.
    """
    side = tensorrt_sidecar(plan)
    if not side.exists():
        raise _metadata_error(plan, f"TensorRT plan has no sidecar {side.name}")
    try:
        record = json.loads(side.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("tensorrt", {}), dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise _metadata_error(plan, f"TensorRT sidecar {side.name} is unreadable ({type(exc).__name__})") from exc
    return record


def openvino_weights(xml: Path) -> Path:
    """The ``.bin`` weights file an OpenVINO IR's ``.xml`` names by convention (same stem)."""
    return xml.with_suffix(".bin")


def detect_kind(path: Path) -> ArtifactKind:
    if not path.exists():
        raise BadInputError(f"{path}: artifact does not exist; export one first (policy-export onnx ...)")
    if not path.is_file():
        raise BadInputError(f"{path}: artifact must be a file")
    if path.suffix == ".xml":
        if not openvino_weights(path).is_file():
            raise BadInputError(
                f"{path}: OpenVINO IR without its weights {openvino_weights(path).name}; copy both files"
            )
        return ArtifactKind.OPENVINO
    if zipfile.is_zipfile(path):
        return ArtifactKind.TORCHSCRIPT
    if path.suffix in (".pt", ".pth"):
        # Not a zip: without this, a truncated TorchScript file would be reported as a bad ONNX file.
        raise BadInputError(f"{path}: not a readable TorchScript file (not a zip archive; truncated?); re-export it")
    if path.suffix in (".plan", ".engine") or tensorrt_sidecar(path).exists():
        return ArtifactKind.TENSORRT
    return ArtifactKind.ONNX


def _metadata_error(path: Path, why: str) -> BadInputError:
    return BadInputError(f"{path}: {why}; only artifacts written by policy-export carry the metadata verify needs")


def _parse_metadata(path: Path, text: str | bytes, where: str) -> ArtifactMetadata:
    """Metadata from any artifact kind; a damaged or foreign record is one line, not a KeyError trace.

    Every field's type and bounds are checked here (``ArtifactMetadata.from_json``), and the
    family's own fields against its declared rules, before anything is sized from them.
    """
    try:
        meta = ArtifactMetadata.from_json(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _metadata_error(path, f"{where} is unreadable ({type(exc).__name__}: {exc})") from exc
    problems = family_problems(meta)
    if problems:
        raise BadInputError(f"{path}: {where}: {problems[0]}; re-export the artifact (it was edited or damaged)")
    return meta


def _same_dtype(graph: str, declared: str) -> bool:
    return numpy_name(graph) == numpy_name(declared)


def check_graph_signature(
    path: Path, meta: ArtifactMetadata, inputs: list[TensorSig], outputs: list[TensorSig]
) -> None:
    """The metadata must describe the graph it rides on: input and output names in order, dtypes,
    and every fixed dim (``action_dim``, chunk and step counts, image sizes). A disagreement is
    one line naming the field: a client sized from the metadata would otherwise mix widths
    (actions of one width, fallbacks of another) or allocate for a chunk the graph never returns."""
    declared = [
        *((n, meta.input_dtypes()[n], s) for n, s in meta.input_shapes().items()),
        *((n, meta.output_dtypes()[n], s) for n, s in meta.output_shapes().items()),
    ]
    graph = [*inputs, *outputs]
    names = [d[0] for d in declared]
    if [g.name for g in inputs] != list(meta.input_shapes()) or [g.name for g in outputs] != list(meta.output_shapes()):
        raise BadInputError(
            f"{path}: metadata declares tensors {names}, the graph has {[g.name for g in graph]} "
            "(spec.signature); re-export the artifact"
        )
    fields = {"action_chunk": ("chunk_size", "action_dim")}
    for (name, dtype, shape), g in zip(declared, graph, strict=True):
        if not _same_dtype(g.dtype, dtype) and not (meta.precision == "fp16" and g.dtype in ("float16",)):
            raise BadInputError(
                f"{path}: metadata says {name} is {dtype}, the graph's {name} is {g.dtype}; re-export it"
            )
        if len(g.shape) != len(shape):
            raise BadInputError(
                f"{path}: metadata says {name} has shape {list(shape)}, the graph's has {list(g.shape)}; re-export it"
            )
        for i, (want, got) in enumerate(zip(shape[1:], g.shape[1:], strict=True), 1):
            if isinstance(got, int) and got > 0 and got != want:
                named = fields.get(name, ())
                field = f"spec.{named[i - 1]}" if i - 1 < len(named) else f"{name} dim {i}"
                raise BadInputError(
                    f"{path}: metadata {field} says {want}, the graph's {name} has {got} there "
                    f"({list(shape)} vs {list(g.shape)}); the metadata was edited or belongs to another graph: re-export it"
                )


def _onnx_info(path: Path) -> ArtifactInfo:
    try:
        import onnx
        from onnx import TensorProto
    except ImportError:  # a robot host may have onnxruntime but not the onnx package
        return _onnx_info_onnxruntime(path)

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise _metadata_error(path, "ONNX file has no policy_export metadata")
    meta = _parse_metadata(path, props[METADATA_KEY], "its policy_export metadata")

    def sig(vi: onnx.ValueInfoProto) -> TensorSig:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim)
        return TensorSig(vi.name, TensorProto.DataType.Name(tt.elem_type).lower(), dims)

    inits = {i.name for i in model.graph.initializer}
    inputs = [sig(i) for i in model.graph.input if i.name not in inits]
    outputs = [sig(o) for o in model.graph.output]
    check_graph_signature(path, meta, inputs, outputs)
    return ArtifactInfo(path=path, kind=ArtifactKind.ONNX, metadata=meta, inputs=inputs, outputs=outputs)


def _onnx_info_onnxruntime(path: Path) -> ArtifactInfo:
    """The same answer read through ONNX Runtime (metadata map and session signature)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UnavailableError(
            f"{path}: reading an ONNX artifact needs onnxruntime (or onnx); pip install onnxruntime"
        ) from exc
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only reading, not running
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from exc
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise _metadata_error(path, "ONNX file has no policy_export metadata")

    def sig(arg: Any) -> TensorSig:  # onnxruntime's NodeArg (pybind, untyped)
        dtype = arg.type.removeprefix("tensor(").removesuffix(")")
        return TensorSig(arg.name, dtype, tuple("?" if d is None else d for d in arg.shape))

    meta = _parse_metadata(path, props[METADATA_KEY], "its policy_export metadata")
    inputs, outputs = [sig(i) for i in session.get_inputs()], [sig(o) for o in session.get_outputs()]
    check_graph_signature(path, meta, inputs, outputs)
    return ArtifactInfo(path=path, kind=ArtifactKind.ONNX, metadata=meta, inputs=inputs, outputs=outputs)


def read_openvino_metadata(path: Path) -> ArtifactMetadata:
    """Metadata from the IR's ``<rt_info><policy_export value=...>`` (XML only: no OpenVINO import needed)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise BadInputError(
            f"{path}: not a readable OpenVINO IR ({type(exc).__name__}); re-run policy-export quantize"
        ) from exc
    node = root.find("rt_info/policy_export")
    if root.tag != "net" or node is None or node.get("value") is None:
        raise _metadata_error(path, "OpenVINO IR has no policy_export metadata")
    return _parse_metadata(path, node.get("value", ""), "its policy_export metadata")


def read_torchscript_metadata(path: Path) -> ArtifactMetadata:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith("extra/" + TORCHSCRIPT_EXTRA)]
        if not names:
            raise _metadata_error(path, "TorchScript file has no extra/policy_export.json")
        return _parse_metadata(path, zf.read(names[0]), f"extra/{TORCHSCRIPT_EXTRA}")


def _signature_from_metadata(meta: ArtifactMetadata) -> tuple[list[TensorSig], list[TensorSig]]:
    shapes, dtypes = meta.input_shapes(), meta.input_dtypes()
    inputs = [TensorSig(n, dtypes[n], shapes[n]) for n in meta.spec.input_names]
    out_shapes, out_dtypes = meta.output_shapes(), meta.output_dtypes()
    return inputs, [TensorSig(n, out_dtypes[n], out_shapes[n]) for n in meta.spec.output_names]


def inspect_artifact(path: Path) -> ArtifactInfo:
    kind = detect_kind(path)
    if kind == ArtifactKind.ONNX:
        return _onnx_info(path)
    if kind == ArtifactKind.TORCHSCRIPT:
        meta = read_torchscript_metadata(path)
    elif kind == ArtifactKind.OPENVINO:
        meta = read_openvino_metadata(path)
    else:
        side = tensorrt_sidecar(path)
        record = read_tensorrt_sidecar(path)
        if "metadata" not in record:
            raise _metadata_error(path, f"TensorRT sidecar {side.name} is unreadable (KeyError)")
        meta = _parse_metadata(path, json.dumps(record["metadata"]), f"TensorRT sidecar {side.name}")
    inputs, outputs = _signature_from_metadata(meta)
    return ArtifactInfo(path=path, kind=kind, metadata=meta, inputs=inputs, outputs=outputs)


def check_compatible(
    info: ArtifactInfo, spec: PolicySpec, checkpoint: str | Path, allow_other_checkpoint: bool = False
) -> list[str]:
    """Raise if the artifact cannot take the inputs of ``spec`` (read from ``checkpoint``), or was exported
    from other statistics (unless ``allow_other_checkpoint``: then that is a warning); return soft warnings.

    Another checkpoint's artifact with the same shapes runs fine and may even land within a
    loose tolerance, which is exactly why it must not pass quietly: the gate would approve a
    model that is not the one trained.
    """
    aspec = info.metadata.spec
    problems = []
    if aspec.input_names != spec.input_names:
        problems.append(f"inputs {aspec.input_names} != checkpoint's {spec.input_names}")
    if aspec.state_dim != spec.state_dim:
        problems.append(f"state_dim {aspec.state_dim} != checkpoint's {spec.state_dim}")
    for a, c in zip(aspec.cameras, spec.cameras, strict=False):
        if tuple(a.shape) != tuple(c.shape):
            problems.append(f"{a.input_name} shape {list(a.shape)} != checkpoint's {list(c.shape)}")
    if (aspec.chunk_size, aspec.action_dim) != (spec.chunk_size, spec.action_dim):
        problems.append(
            f"action chunk {aspec.chunk_size}x{aspec.action_dim} != checkpoint's {spec.chunk_size}x{spec.action_dim}"
        )
    if problems:
        raise BadInputError(
            f"{info.path}: artifact does not match checkpoint {checkpoint}: {'; '.join(problems)}; re-export it from this checkpoint"
        )
    warnings = []
    if aspec.norm_hash != spec.norm_hash:
        if not allow_other_checkpoint:
            raise BadInputError(
                f"{info.path}: exported from another checkpoint (normalization hash {aspec.norm_hash}, "
                f"{checkpoint} has {spec.norm_hash}); re-export it from this checkpoint, or pass "
                "--allow-other-checkpoint to compare them anyway"
            )
        warnings.append(
            f"normalization hash {aspec.norm_hash} != checkpoint's {spec.norm_hash}: exported from different statistics"
        )
    return warnings
