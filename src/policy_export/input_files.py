"""Every file a command reads, for the no-clobber guard (:func:`policy_export.fsutil.refuse_inputs`).

An input is not only the path on the command line: a checkpoint's processor JSONs name state
files, an ONNX model names its external-data files, a TensorRT plan has its sidecar. Any of
them may lie outside the folder given, and an output written over one would destroy what the
command read, so each command passes this list, ``--force`` or not.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from policy_export.artifacts import openvino_weights, tensorrt_sidecar
from policy_export.checkpoint.files import checkpoint_files


def onnx_external_locations(path: Path) -> list[str]:
    """The ``location`` of every external-data file an ONNX model names, as written (subgraphs too).

    Best effort and never raising: an unreadable model is refused later by whoever opens it.
    """
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    graphs, tensors = [model.graph], []
    while graphs:  # subgraphs too (a Loop body's constants)
        g = graphs.pop()
        tensors += list(g.initializer)
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors += list(a.tensors)
                graphs += [a.g] if a.HasField("g") else list(a.graphs)
    found = set()
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location")
            if loc:
                found.add(loc)
    return sorted(found)


def onnx_external_data(path: Path) -> list[Path]:
    """The external-data files an ONNX model names (resolved beside it, wherever they point)."""
    return [path.parent / loc for loc in onnx_external_locations(path)]


def tokenizer_sidecar(path: Path) -> Path:
    """``<artifact>.tokenizer.json``: a language model's tokenizer, written beside it at export (the
    suffix is :data:`policy_export.language.SIDECAR_SUFFIX`; this module may not import transformers)."""
    return Path(str(path) + ".tokenizer.json")


def artifact_files(path: Path) -> list[Path]:
    """An artifact and the files read with it (TensorRT sidecar, ONNX external data, OpenVINO weights,
    a language model's tokenizer)."""
    files = [path]
    if tokenizer_sidecar(path).is_file():
        files.append(tokenizer_sidecar(path))
    side = tensorrt_sidecar(path)
    if path.suffix == ".xml":
        files.append(openvino_weights(path))
    elif path.suffix in (".plan", ".engine") or side.exists():
        files.append(side)
    elif path.is_file() and path.suffix not in (".pt", ".pth") and not zipfile.is_zipfile(path):
        files.extend(onnx_external_data(path))
    return files


def files_read(checkpoint: Path | None = None, artifacts: Iterable[Path] = ()) -> list[Path]:
    """Everything a command that reads ``checkpoint`` and ``artifacts`` reads."""
    out = checkpoint_files(checkpoint) if checkpoint is not None else []
    for art in artifacts:
        out.extend(artifact_files(art))
    return out
