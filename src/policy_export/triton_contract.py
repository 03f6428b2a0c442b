"""The Triton model config ``parameters`` policy-export writes and reads back: names, types, per-version keys.

Triton's ``parameters`` map is string to string, and four parties speak it: the config writer
(:mod:`policy_export.triton.config`), the offline validator (:mod:`policy_export.triton.version_check`),
the robot-side client (:mod:`policy_export.runtime.triton`) and the Python-backend template
(``model_repository_templates/ort_model.py``, which runs inside the server and cannot import this
package; a test checks that its key is this module's). Each key is named once here, with the type
its string encodes and the encoding, so a renamed key or a changed encoding cannot drift between
writer and readers. Plain Python: the runtime imports it.

Model-wide keys describe the model (and, for clients that do not pin a version, the latest
version); ``version.<N>.<key>`` keys hold what may differ between versions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from policy_export.spec import CameraSpec


class ModelParam(StrEnum):
    """Model-wide parameter keys (the type each holds is in :class:`ModelParameters`)."""

    POLICY_EXPORT_VERSION = "policy_export_version"
    POLICY_TYPE = "policy_type"
    ARTIFACT_KIND = "artifact_kind"
    IMAGE_FORMAT = "image_format"
    CHUNK_SIZE = "chunk_size"
    STATE_DIM = "state_dim"
    ACTION_DIM = "action_dim"
    CAMERAS = "cameras"
    POLICY_INPUT_NAMES = "policy_input_names"
    POLICY_OUTPUT_NAMES = "policy_output_names"
    INPUT_NAMES = "input_names"
    OUTPUT_NAMES = "output_names"
    NAMING_CONVENTION = "naming_convention"
    VERSIONS = "versions"
    N_ACTION_STEPS = "n_action_steps"
    #: The host declaration (:class:`~policy_export.spec.HostDecl`) as JSON: history, ensembling, tokenizer, RTC.
    HOST = "host"
    #: The family's own fields (``spec.family``) as JSON; what they mean is the family's business.
    FAMILY = "family"
    NORMALIZATION_HASH = "normalization_hash"
    #: ONNX Runtime intra-op threads per instance of a ``--backend python`` model (absent: ORT's default).
    INTRA_OP_THREAD_COUNT = "intra_op_thread_count"


class VersionParam(StrEnum):
    """Per-version parameter keys, written as ``version.<N>.<key>``."""

    N_ACTION_STEPS = "n_action_steps"
    HOST = "host"
    FAMILY = "family"
    NORMALIZATION_HASH = "normalization_hash"
    PRECISION = "precision"
    SHA256 = "sha256"
    #: The version's full :class:`~policy_export.spec.ArtifactMetadata` as JSON.
    METADATA = "metadata"


class NamingConvention(StrEnum):
    """How wire names relate to the policy's tensor names."""

    GRAPH_NAMES = "graph_names"
    #: pytorch_libtorch: ``<name>__<index>``.
    NAME_INDEX = "name__index"


#: The dims a per-robot scalar input (``[B]``: SmolVLA's ``rtc_prev_len`` / ``rtc_delay``) takes on the wire.
#: A batched Triton model cannot declare empty dims, so such a tensor travels as ``[B, 1]`` and the
#: config's ``reshape: { shape: [] }`` hands the model its ``[B]``. The config writer, the offline
#: validator and the robot-side client all read this one rule.
SCALAR_WIRE_DIMS: tuple[int, ...] = (1,)


def wire_dims(dims: tuple[int, ...]) -> tuple[int, ...]:
    """The Triton ``dims`` (no batch axis) of a model tensor whose dims past the batch are ``dims``."""
    return tuple(dims) if dims else SCALAR_WIRE_DIMS


def version_key(version: int | str, param: VersionParam) -> str:
    return f"version.{version}.{param}"


#: Written by policy-export before the family seam (metadata schema 2): ACT's ensembling coefficient
#: as a flat parameter. Read only to rebuild the metadata of such repositories (no version metadata).
LEGACY_TEMPORAL_ENSEMBLE_COEFF = "temporal_ensemble_coeff"


def decode_coeff(text: str | None) -> float | None:
    """A legacy ``temporal_ensemble_coeff`` value ("none" when ensembling was off)."""
    if text is None or text.strip().lower() in ("", "none", "null"):
        return None
    return float(text)


def encode_json(value: object) -> str:
    """A JSON parameter value (sorted keys: the same record always gives the same string)."""
    return json.dumps(value, sort_keys=True)


def encode_names(names: list[str] | tuple[str, ...]) -> str:
    return ",".join(names)


def decode_names(text: str | None) -> tuple[str, ...]:
    return tuple(n for n in (text or "").split(",") if n)


def encode_cameras(cameras: tuple[CameraSpec, ...]) -> str:
    return json.dumps([{"key": c.key, "input_name": c.input_name, "shape": list(c.shape)} for c in cameras])


def decode_cameras(text: str) -> tuple[CameraSpec, ...]:
    """Raises ValueError / KeyError / TypeError on a hand-edited value (callers make that one line)."""
    cameras = []
    for c in json.loads(text):
        c_, h, w = (int(d) for d in c["shape"])
        cameras.append(CameraSpec(key=c["key"], input_name=c["input_name"], shape=(c_, h, w)))
    return tuple(cameras)


def version_value(params: Mapping[str, str], version: int | str, param: VersionParam) -> str:
    """A per-version value, falling back to the model-wide one of the same name ("" when neither is set)."""
    return params.get(version_key(version, param), params.get(str(param), ""))


def wire_names(params: Mapping[str, str]) -> dict[str, str]:
    """Policy tensor name -> name on the wire (``state`` -> ``state__0`` for TorchScript models)."""
    names: dict[str, str] = {}
    for wire_key, policy_key in (
        (ModelParam.INPUT_NAMES, ModelParam.POLICY_INPUT_NAMES),
        (ModelParam.OUTPUT_NAMES, ModelParam.POLICY_OUTPUT_NAMES),
    ):
        wire, policy = decode_names(params.get(wire_key)), decode_names(params.get(policy_key))
        if wire and len(wire) == len(policy):
            names.update(zip(policy, wire, strict=True))
    return names


@dataclass(frozen=True)
class VersionParameters:
    """What ``version.<N>.*`` records about one served version."""

    n_action_steps: int
    host: str
    family: str
    normalization_hash: str
    precision: str
    sha256: str
    metadata: str

    def to_strings(self, version: int) -> dict[str, str]:
        return {
            version_key(version, VersionParam.N_ACTION_STEPS): str(self.n_action_steps),
            version_key(version, VersionParam.HOST): self.host,
            version_key(version, VersionParam.FAMILY): self.family,
            version_key(version, VersionParam.NORMALIZATION_HASH): self.normalization_hash,
            version_key(version, VersionParam.PRECISION): self.precision,
            version_key(version, VersionParam.SHA256): self.sha256,
            version_key(version, VersionParam.METADATA): self.metadata,
        }

    @classmethod
    def from_strings(cls, params: Mapping[str, str], version: int) -> VersionParameters:
        return cls(
            n_action_steps=int(params[version_key(version, VersionParam.N_ACTION_STEPS)]),
            host=params[version_key(version, VersionParam.HOST)],
            family=params[version_key(version, VersionParam.FAMILY)],
            normalization_hash=params[version_key(version, VersionParam.NORMALIZATION_HASH)],
            precision=params[version_key(version, VersionParam.PRECISION)],
            sha256=params[version_key(version, VersionParam.SHA256)],
            metadata=params[version_key(version, VersionParam.METADATA)],
        )


@dataclass(frozen=True)
class ModelParameters:
    """Every parameter ``policy-export triton-repo`` writes, typed; ``to_strings`` / ``from_strings`` are inverses."""

    policy_export_version: str
    policy_type: str
    artifact_kind: str
    image_format: str
    chunk_size: int
    state_dim: int
    action_dim: int
    cameras: tuple[CameraSpec, ...]
    policy_input_names: tuple[str, ...]
    policy_output_names: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    naming_convention: NamingConvention
    n_action_steps: int
    #: JSON: the latest version's host declaration and family fields.
    host: str
    family: str
    normalization_hash: str
    versions: dict[int, VersionParameters] = field(default_factory=dict)
    intra_op_thread_count: int | None = None

    def to_strings(self) -> dict[str, str]:
        params = {
            ModelParam.POLICY_EXPORT_VERSION: self.policy_export_version,
            ModelParam.POLICY_TYPE: self.policy_type,
            ModelParam.ARTIFACT_KIND: self.artifact_kind,
            ModelParam.IMAGE_FORMAT: self.image_format,
            ModelParam.CHUNK_SIZE: str(self.chunk_size),
            ModelParam.STATE_DIM: str(self.state_dim),
            ModelParam.ACTION_DIM: str(self.action_dim),
            ModelParam.CAMERAS: encode_cameras(self.cameras),
            ModelParam.POLICY_INPUT_NAMES: encode_names(self.policy_input_names),
            ModelParam.POLICY_OUTPUT_NAMES: encode_names(self.policy_output_names),
            ModelParam.INPUT_NAMES: encode_names(self.input_names),
            ModelParam.OUTPUT_NAMES: encode_names(self.output_names),
            ModelParam.NAMING_CONVENTION: str(self.naming_convention),
            ModelParam.VERSIONS: ",".join(str(v) for v in sorted(self.versions)),
            ModelParam.N_ACTION_STEPS: str(self.n_action_steps),
            ModelParam.HOST: self.host,
            ModelParam.FAMILY: self.family,
            ModelParam.NORMALIZATION_HASH: self.normalization_hash,
        }
        if self.intra_op_thread_count is not None:
            params[ModelParam.INTRA_OP_THREAD_COUNT] = str(self.intra_op_thread_count)
        out = {str(k): v for k, v in params.items()}
        for v, version in sorted(self.versions.items()):
            out.update(version.to_strings(v))
        return out

    @classmethod
    def from_strings(cls, params: Mapping[str, str]) -> ModelParameters:
        """Strict: raises KeyError / ValueError when a parameter is missing or malformed."""
        threads = params.get(ModelParam.INTRA_OP_THREAD_COUNT)
        versions = [int(v) for v in decode_names(params[ModelParam.VERSIONS])]
        return cls(
            policy_export_version=params[ModelParam.POLICY_EXPORT_VERSION],
            policy_type=params[ModelParam.POLICY_TYPE],
            artifact_kind=params[ModelParam.ARTIFACT_KIND],
            image_format=params[ModelParam.IMAGE_FORMAT],
            chunk_size=int(params[ModelParam.CHUNK_SIZE]),
            state_dim=int(params[ModelParam.STATE_DIM]),
            action_dim=int(params[ModelParam.ACTION_DIM]),
            cameras=decode_cameras(params[ModelParam.CAMERAS]),
            policy_input_names=decode_names(params[ModelParam.POLICY_INPUT_NAMES]),
            policy_output_names=decode_names(params[ModelParam.POLICY_OUTPUT_NAMES]),
            input_names=decode_names(params[ModelParam.INPUT_NAMES]),
            output_names=decode_names(params[ModelParam.OUTPUT_NAMES]),
            naming_convention=NamingConvention(params[ModelParam.NAMING_CONVENTION]),
            n_action_steps=int(params[ModelParam.N_ACTION_STEPS]),
            host=params[ModelParam.HOST],
            family=params[ModelParam.FAMILY],
            normalization_hash=params[ModelParam.NORMALIZATION_HASH],
            versions={v: VersionParameters.from_strings(params, v) for v in versions},
            intra_op_thread_count=int(threads) if threads else None,
        )
