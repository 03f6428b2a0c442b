"""The tensors a Triton config declares, taken from an artifact's real signature.

Naming on the wire (what a client sends/reads, recorded in ``parameters`` as
``input_names``/``output_names``):

- ONNX (``onnxruntime_onnx``, and ``--backend python``) and TensorRT plans: the graph's own
  names, ``state``, ``image`` (or ``image_<camera>``), ``action_chunk``.
- TorchScript (``pytorch_libtorch``): ``<name>__<index>`` (``state__0``, ``image__1``...,
  ``action_chunk__0``). Triton's libtorch backend maps outputs *only* through that
  convention, and inputs either through forward-argument names or the same convention; a
  traced ``forward(state, *images)`` has no usable argument names for the images, so the
  index convention is the one that always works. The index is the positional argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from policy_export.artifacts import ArtifactInfo, TensorSig
from policy_export.dtypes import triton_config_type
from policy_export.errors import BadInputError
from policy_export.triton.backends import ServingBackend
from policy_export.triton_contract import wire_dims


@dataclass(frozen=True)
class WireTensor:
    """One tensor as Triton sees it: wire name, Triton data type, dims without the batch axis."""

    name: str
    policy_name: str
    data_type: str
    dims: tuple[int, ...]
    #: The model's own dims when they differ from the wire's (a ``[B]`` tensor sent as ``[B, 1]``):
    #: written as the config's ``reshape``.
    reshape: tuple[int, ...] | None = None

    def describe(self) -> str:
        return f"{self.name} {self.data_type} {list(self.dims)}"


@dataclass
class Signature:
    inputs: list[WireTensor] = field(default_factory=list)
    outputs: list[WireTensor] = field(default_factory=list)


def _wire(sig: TensorSig, index: int, spec: ServingBackend, path: Path) -> WireTensor:
    if not sig.shape or isinstance(sig.shape[0], int):
        raise BadInputError(
            f"{path}: {sig.name} has a fixed batch axis {list(sig.shape)}; Triton batching needs a dynamic batch "
            "axis: re-export it with policy-export (dynamic batch)"
        )
    dims = sig.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise BadInputError(f"{path}: {sig.name} has symbolic dims {list(sig.shape)} beyond the batch axis")
    data_type = triton_config_type(sig.dtype)
    if data_type is None:
        raise BadInputError(f"{path}: {sig.name} has data type {sig.dtype}, which this tool cannot map to Triton")
    name = f"{sig.name}__{index}" if spec.named_index else sig.name
    model_dims = tuple(int(d) for d in dims)
    on_wire = wire_dims(model_dims)
    return WireTensor(name, sig.name, data_type, on_wire, model_dims if on_wire != model_dims else None)


def wire_signature(info: ArtifactInfo, spec: ServingBackend) -> Signature:
    """The artifact's inputs/outputs as a Triton config must declare them."""
    return Signature(
        inputs=[_wire(s, i, spec, info.path) for i, s in enumerate(info.inputs)],
        outputs=[_wire(s, i, spec, info.path) for i, s in enumerate(info.outputs)],
    )


def signature_differences(old: Signature, new: Signature) -> list[str]:
    """Human-readable differences between two signatures (empty when they are the same)."""
    diffs: list[str] = []
    for what, a, b in (("input", old.inputs, new.inputs), ("output", old.outputs, new.outputs)):
        a_names, b_names = [t.name for t in a], [t.name for t in b]
        if a_names != b_names:
            diffs.append(f"{what} names {a_names} in the config vs {b_names} in the new artifact")
            continue
        for ta, tb in zip(a, b, strict=True):
            if ta.data_type != tb.data_type:
                diffs.append(
                    f"{what} {ta.name}: data type {ta.data_type} in the config vs {tb.data_type} in the new artifact"
                )
            if ta.dims != tb.dims:
                diffs.append(
                    f"{what} {ta.name}: dims {list(ta.dims)} in the config vs {list(tb.dims)} in the new artifact"
                )
            elif ta.reshape != tb.reshape:
                diffs.append(
                    f"{what} {ta.name}: reshape {ta.reshape} in the config vs {tb.reshape} in the new artifact"
                )
    return diffs
