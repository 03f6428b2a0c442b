"""Export the stateless core to ONNX, then prove the file is valid and numerically right.

Facts this code is built around (measured on lerobot 0.6.1 / torch 2.11):
- the dynamo exporter given an example batch of 1 silently freezes the batch at 1, so we
  export with batch 2 and check the saved batch axis is symbolic;
- dynamo at opset < 18 emits a Split ORT rejects, so ``auto`` takes the legacy exporter
  for an explicit ``--opset`` below 18;
- dynamo asked for an opset it cannot convert to (e.g. 99) quietly writes opset 18, so
  the saved file's opset is checked against the one recorded in the metadata;
- dynamo writes an external ``.onnx.data`` file by default; we write one self-contained
  file while the tensors fit protobuf's 2 GB message limit (the ACT core is ~200 MB), and
  above it (:data:`EXTERNAL_DATA_THRESHOLD`) the tensors go to one ``<file>.onnx.data``
  beside it, written and published with the same no-clobber and atomic rules as the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.action_space import ActionScale
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.enums import ArtifactKind, ImageFormat, Precision
from policy_export.errors import BadInputError, PolicyExportError, first_line
from policy_export.fsutil import atomic_output, check_writable
from policy_export.input_files import files_read
from policy_export.spec import METADATA_KEY, ArtifactMetadata
from policy_export.versions import library_versions

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

log = logging.getLogger(__name__)

DEFAULT_OPSET = 20
MIN_DYNAMO_OPSET = 18
#: The oldest opset torch's exporters write.
MIN_OPSET = 7
EXPORT_BATCH = 2
#: Tensor bytes above which the weights go to ``<file>.data``: protobuf refuses messages over 2 GiB,
#: and the graph and metadata need room beside the tensors.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26
#: The external data file of ``x.onnx``: ``x.onnx.data`` (what the dynamo exporter names it too).
EXTERNAL_DATA_SUFFIX = ".data"


@dataclass
class OnnxExportResult:
    path: Path
    exporter: str
    opset: int
    fallback_reason: str | None
    quick_check_max_abs: float
    nodes: int
    #: The external data file (None: the weights are inside the .onnx file).
    external_data: Path | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print pages of progress and warnings; keep the CLI readable."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def _export(
    core: nn.Module, args: tuple[torch.Tensor, ...], out: Path, names: list[str], exporter: str, opset: int
) -> None:
    import torch

    n_images = len(names) - 1
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        dyn = ({0: batch}, tuple({0: batch} for _ in range(n_images)))
        torch.onnx.export(
            core,
            args,
            str(out),
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=["action_chunk"],
            dynamic_shapes=dyn,
            external_data=True,  # loaded back right after; saved embedded or not by export_onnx
            optimize=True,
        )
    else:
        axes = {n: {0: "batch"} for n in [*names, "action_chunk"]}
        torch.onnx.export(
            core,
            args,
            str(out),
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=["action_chunk"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield sub
                yield from _subgraphs(sub)


def _share_identical_initializers(model: onnx.ModelProto) -> None:
    """Point every use of a byte-identical initializer at one copy, in subgraphs too.

    Why: ONNX Runtime shares identical initializers itself, but not when a ``Loop`` body uses
    them (Diffusion's U-Net): it then prints one warning per tensor at every session start
    ("Implicit input name ... cannot be safely updated"). Freshly initialised or frozen norm
    layers (all ones, all zeros) are the usual duplicates. Straight-line graphs are left as
    the exporter wrote them.
    """
    graph = model.graph
    subgraphs = list(_subgraphs(graph))
    if not subgraphs:
        return
    # Keyed by a digest, not the bytes: the default SmolVLA's keys held another 1.4 GB copy of
    # its weights. A digest match is confirmed byte for byte, so a collision cannot merge tensors.
    first: dict[tuple[int, tuple[int, ...], bytes], onnx.TensorProto] = {}
    rename: dict[str, str] = {}
    keep: list[onnx.TensorProto] = []
    for init in graph.initializer:
        key = (init.data_type, tuple(init.dims), _digest(init))
        twin = first.get(key)
        if twin is not None and _same_values(init, twin):
            rename[init.name] = twin.name
        else:
            first.setdefault(key, init)
            keep.append(init)
    kept_names = {init.name for init in keep}
    first.clear()
    keep.clear()  # no live references into the fields deleted from below
    # The legacy exporter already shares some: it writes those as top-level Identity nodes of
    # an initializer, which ONNX Runtime folds back into duplicate initializers.
    copies = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in kept_names]
    for node in copies:
        rename[node.output[0]] = node.input[0]
    if not rename:
        return
    for g in [graph, *subgraphs]:
        for node in g.node:
            node.input[:] = [rename.get(name, name) for name in node.input]
    # Deleted in place, from the end: rebuilding the fields with extend() would copy every kept
    # tensor (another ~1 GB for the default SmolVLA, which protobuf's arena does not give back).
    dropped = {n.output[0] for n in copies}  # output names are unique in a graph
    for i in reversed(range(len(graph.node))):
        if graph.node[i].output and graph.node[i].output[0] in dropped:
            del graph.node[i]
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in rename:
            del graph.initializer[i]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _length_delimited(field_number: int, size: int) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(size)


def _field_bytes(msg: Any, fd: Any, value: Any) -> bytes:
    """One (small) field of ``msg`` encoded exactly as protobuf encodes it within ``msg``."""
    tmp = type(msg)()
    if fd.is_repeated:
        getattr(tmp, fd.name).extend(value)
    elif fd.message_type is not None:
        getattr(tmp, fd.name).CopyFrom(value)
    else:
        setattr(tmp, fd.name, value)
    return bytes(tmp.SerializeToString())


def _graph_parts(graph: onnx.GraphProto) -> Iterator[tuple[int, bytes, Any]]:
    """The graph's encoding as (size, head, body) parts in protobuf's field order: each element of
    a repeated message field (a node, an initializer) on its own, its body the message itself
    (encoded when written); every other field whole, its body ``None``."""
    for fd, value in graph.ListFields():
        if fd.is_repeated and fd.message_type is not None:
            for element in value:
                size = element.ByteSize()
                head = _length_delimited(fd.number, size)
                yield len(head) + size, head, element
        else:
            encoded = _field_bytes(graph, fd, value)
            yield len(encoded), encoded, None


def save_streamed(model: onnx.ModelProto, path: Path) -> None:
    """``onnx.save`` for one self-contained file, writing the graph node by node and tensor by tensor.

    Why: protobuf serialises a message into one buffer that it grows by doubling, then copies it
    into a Python ``bytes``; for a 1.3 GB model (the default SmolVLA) ``onnx.save`` held about
    three extra copies of the weights at once, the export's memory peak. The bytes written are
    the ones ``SerializeToString`` makes (same fields, same order), so any reader sees the same
    file; only one node or tensor is ever encoded at a time.
    """
    with open(path, "wb") as f:
        for fd, value in model.ListFields():
            if fd.name != "graph":
                f.write(_field_bytes(model, fd, value))
                continue
            parts = list(_graph_parts(value))
            f.write(_length_delimited(fd.number, sum(size for size, _, _ in parts)))
            for _, head, body in parts:
                f.write(head)
                if body is not None:
                    f.write(body.SerializeToString())


def _digest(init: onnx.TensorProto) -> bytes:
    """A digest of an initializer's values as stored (raw bytes, or the typed fields the
    exporter used instead), without materialising a numpy copy of the tensor."""
    from onnx import numpy_helper

    if init.HasField("raw_data"):
        return hashlib.blake2b(init.raw_data, digest_size=16).digest()
    # Typed fields (int64_data, float_data...): exporters use them for small tensors only.
    return hashlib.blake2b(numpy_helper.to_array(init).tobytes(), digest_size=16).digest()


def _same_values(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Byte-for-byte equality of two initializers of one dtype and shape (digest matches only)."""
    from onnx import numpy_helper

    return bool(numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes())


def _name_output_dims(model: onnx.ModelProto, dims: tuple[int, ...]) -> None:
    """Write the output's fixed dims where the exporter left them symbolic.

    Shape inference cannot see through an ONNX ``Loop`` (Diffusion's denoising loop), so the
    legacy exporter names them (``Addaction_chunk_dim_1``); Triton configs and runtimes need
    the numbers. Dims the exporter did write must already agree.
    """
    out = model.graph.output[0].type.tensor_type.shape.dim
    for dim, want in zip(out[1:], dims, strict=True):
        if dim.dim_value and dim.dim_value != want:
            raise PolicyExportError(
                f"exported action_chunk dim {dim.dim_value} != {want}; this is a bug in policy-export, please report it"
            )
        dim.dim_value = want


def _batch_axis_is_symbolic(model: onnx.ModelProto) -> bool:
    return all(not vi.type.tensor_type.shape.dim[0].dim_value for vi in [*model.graph.input, *model.graph.output])


def export_onnx(
    ckpt: LoadedCheckpoint,
    output: Path,
    *,
    opset: int | None = None,
    exporter: str = "auto",
    force: bool = False,
    image_format: ImageFormat = ImageFormat.FLOAT32,
    precision: Precision = Precision.FP32,
    quick_check: bool = True,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> OnnxExportResult:
    """Export, check, embed metadata, quick-parity-check, then move into place.

    ``external_data_threshold`` (bytes of tensors) is protobuf's limit less room for the graph;
    tests lower it to exercise the external-data path on a small model."""
    import onnx
    import torch

    from policy_export.core import build_core, example_args, for_tracing, write_sidecars

    if exporter not in ("auto", "dynamo", "legacy"):
        raise BadInputError(f"--exporter must be auto, dynamo or legacy, not {exporter!r}")
    max_opset = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= max_opset:
        raise BadInputError(
            f"--opset {opset}: choose an opset from {MIN_OPSET} to {max_opset} (default {DEFAULT_OPSET})"
        )
    if opset is not None and exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise BadInputError(
            f"--opset {opset}: the dynamo exporter needs opset >= {MIN_DYNAMO_OPSET} (ONNX Runtime rejects its Split below that); use --exporter legacy"
        )
    core = build_core(ckpt, image_format=image_format)
    args = example_args(ckpt, EXPORT_BATCH, image_format)
    names = ckpt.spec.input_names
    chosen_opset = opset or DEFAULT_OPSET

    data_path = output.with_name(output.name + EXTERNAL_DATA_SUFFIX)
    read = files_read(ckpt.path)
    if _core_bytes(core) > external_data_threshold:  # refused before the slow part, not after it
        check_writable(data_path, force, "ONNX external data file", read)
    with (
        atomic_output(output, force=force, what="ONNX file", inputs=read) as tmp,
        tempfile.TemporaryDirectory(prefix=f".{output.name}.", suffix=".stage", dir=output.parent) as stage_dir,
    ):
        # Exported and saved in a private folder: an exporter that spills tensors to files (the legacy
        # one over 2 GB) never writes beside the user's files, and a failed run leaves nothing.
        stage = Path(stage_dir) / output.name
        used, fallback = exporter, None
        if exporter == "auto":
            from policy_export.families import family_for

            used = family_for(ckpt.spec.policy_type).onnx_exporter
        if used == "auto" and chosen_opset < MIN_DYNAMO_OPSET:
            # Honour the opset asked for rather than silently raising it to what dynamo needs.
            used, fallback = (
                "legacy",
                f"--opset {chosen_opset} is below the dynamo exporter's minimum {MIN_DYNAMO_OPSET}",
            )
        with torch.inference_mode(False), torch.no_grad(), _quiet():
            if used in ("auto", "dynamo"):
                try:
                    _export(core, args, stage, names, "dynamo", chosen_opset)
                    used = "dynamo"
                except OSError:
                    raise  # the disk, not the exporter: the legacy exporter would fail the same way
                except Exception as exc:
                    if exporter == "dynamo":
                        raise PolicyExportError(
                            f"dynamo ONNX export failed: {first_line(exc)}; try --exporter legacy"
                        ) from exc
                    fallback = f"the dynamo exporter failed ({first_line(exc)})"
                    log.warning("%s; falling back to the legacy exporter", fallback)
                    used = "legacy"
            if used == "legacy":
                try:
                    _export(for_tracing(ckpt, core, args), args, stage, names, "legacy", chosen_opset)
                except OSError:
                    raise
                except Exception as exc:
                    after = f" (used because {fallback})" if fallback else ""
                    raise PolicyExportError(f"legacy ONNX export failed: {first_line(exc)}{after}") from exc

        model = onnx.load(str(stage))
        _name_output_dims(model, (ckpt.spec.chunk_size, ckpt.spec.action_dim))
        _share_identical_initializers(model)
        if not _batch_axis_is_symbolic(model):
            raise PolicyExportError(
                f"{used} exporter froze the batch axis; this is a bug in policy-export, please report it"
            )
        written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if written != chosen_opset:
            # The dynamo exporter quietly falls back to its own opset when it cannot convert to the
            # one asked for; the metadata must never claim an opset the file does not have.
            raise BadInputError(
                f"--opset {chosen_opset}: the {used} exporter wrote opset {written} instead; "
                f"choose an opset it supports (default {DEFAULT_OPSET})"
            )
        if precision == Precision.FP16:
            from policy_export.export.fp16 import convert_to_fp16

            model = convert_to_fp16(model)
        meta = ArtifactMetadata(
            spec=ckpt.spec,
            artifact_kind=ArtifactKind.ONNX,
            image_format=image_format,
            precision=precision,
            exporter=used,
            opset=chosen_opset,
            versions=library_versions("onnxscript"),
        )
        _embed_metadata(model, meta, ckpt.action_scale)
        external = tensor_bytes(model) > external_data_threshold
        for leftover in Path(stage_dir).iterdir():  # what the exporter wrote, now loaded in `model`
            leftover.unlink()
        if external:
            check_writable(data_path, force, "ONNX external data file", read)
            onnx.save_model(
                model,
                str(stage),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_path.name,
                size_threshold=1024,
            )
        else:  # one node or tensor encoded at a time: onnx.save was the export's memory peak
            save_streamed(model, stage)
        nodes = len(model.graph.node)
        del model
        # Checked where it was saved (the data file beside it, as it will be).
        onnx.checker.check_model(str(stage), full_check=True)
        max_abs = _quick_check(core, stage, ckpt, image_format, precision) if quick_check else float("nan")
        if external:
            with atomic_output(data_path, force=force, what="ONNX external data file", inputs=read) as tmp_data:
                os.replace(stage.with_name(data_path.name), tmp_data)
        os.replace(stage, tmp)
        write_sidecars(ckpt, output)
    return OnnxExportResult(
        path=output,
        exporter=used,
        opset=chosen_opset,
        fallback_reason=fallback,
        quick_check_max_abs=max_abs,
        nodes=nodes,
        external_data=data_path if external else None,
    )


def _core_bytes(core: nn.Module) -> int:
    """The core's parameter and buffer bytes: what the exported file's tensors will about weigh."""
    return sum(t.numel() * t.element_size() for t in [*core.parameters(), *core.buffers()])


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor the model holds (initializers and constant attributes, subgraphs included)."""
    total = 0
    for graph in [model.graph, *_subgraphs(model.graph)]:
        tensors = list(graph.initializer)
        tensors += [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
        tensors += [t for n in graph.node for a in n.attribute for t in a.tensors]
        total += sum(t.ByteSize() for t in tensors)
    return total


#: metadata_props key of the policy's normalized action space (``ActionScale.to_dict`` as JSON): a tool that
#: holds only the ONNX file (the TensorRT builder's quick check) gates in the space verify gates in.
ACTION_SCALE_KEY = "action_scale"


def onnx_action_scale(path: Path) -> ActionScale | None:
    """The action scale an ONNX file was exported with; None for files exported before it was recorded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    text = next((p.value for p in model.metadata_props if p.key == ACTION_SCALE_KEY), None)
    if text is None:
        return None
    try:
        return ActionScale.from_dict(json.loads(text))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise BadInputError(f"{path}: its '{ACTION_SCALE_KEY}' metadata is unreadable ({exc}); re-export it") from None


def _embed_metadata(model: onnx.ModelProto, meta: ArtifactMetadata, action_scale: ActionScale | None = None) -> None:
    spec = meta.spec
    props = {
        METADATA_KEY: meta.to_json(),
        "policy_type": spec.policy_type,
        "chunk_size": str(spec.chunk_size),
        "n_action_steps": str(spec.n_action_steps),
        "host": json.dumps(spec.host.to_dict(), sort_keys=True),
        "family": json.dumps(spec.family, sort_keys=True),
        "input_names": ",".join(spec.input_names),
        "output_names": ",".join(spec.output_names),
        "normalization_hash": spec.norm_hash,
        "image_format": meta.image_format,
        "precision": meta.precision,
        "exporter": meta.exporter,
        "opset": str(meta.opset),
        **{f"version.{k}": v for k, v in meta.versions.items()},
    }
    if action_scale is not None:
        props[ACTION_SCALE_KEY] = json.dumps(action_scale.to_dict())
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "policy-export"


def _quick_check(core: nn.Module, path: Path, ckpt: LoadedCheckpoint, image_format: str, precision: str) -> float:
    """Exported file vs the core it came from, at a batch size it was not traced with."""
    import onnxruntime as ort
    import torch

    from policy_export.compare import parity_gate
    from policy_export.core import example_args
    from policy_export.tolerances import quick_check_atol

    names = ckpt.spec.input_names
    feed_args = example_args(ckpt, 3, image_format, seed=1234)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: a.numpy() for n, a in zip(names, feed_args, strict=True)})[0]
    with torch.no_grad():
        want = core(*feed_args).numpy()
    scale = ckpt.action_scale  # in the policy's normalized action space, as verify gates (issue 19)
    return parity_gate(
        scale.normalize(want),
        scale.normalize(got),
        quick_check_atol(precision),
        what=f"{path.name}: quick parity check failed right after export (normalized action space)",
        then="the file was not written",
    ).max_abs
