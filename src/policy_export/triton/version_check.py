"""What the offline validator checks in each version folder of a model: the file its backend
loads is there and is the artifact kind the config's backend serves, its real signature (and
TensorRT profile) matches the config, its digest is the one recorded, and the three records of
its policy settings (the model file's metadata, ``version.N.metadata`` and the flat
``parameters``) agree.

Apart from :mod:`policy_export.triton.validate` (which checks the config itself and walks the
repository) because these checks open the artifacts, and the parameter cross-check is the
validator's side of the :mod:`policy_export.triton_contract`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from policy_export.errors import PolicyExportError
from policy_export.spec import METADATA_KEY, ArtifactMetadata
from policy_export.triton.backends import ServingBackend
from policy_export.triton.config import file_sha256
from policy_export.triton.options import profile_problems
from policy_export.triton.signature import Signature, signature_differences, wire_signature
from policy_export.triton_contract import (
    ModelParam,
    VersionParam,
    decode_names,
    encode_cameras,
    encode_json,
    version_key,
)

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def _check_version(
    cfg: ModelConfig, spec: ServingBackend, version: int, vdir: Path, config_sig: Signature, problems: list[str]
) -> None:
    from policy_export.artifacts import inspect_artifact

    artifact = vdir / spec.filename
    label = f"version {version}"
    if not artifact.exists():
        problems.append(
            f"{label}: {vdir.name}/{spec.filename} is missing (the {spec.platform or spec.backend} backend loads that file)"
        )
        return
    for _suffix, name in spec.companions:
        if not (vdir / name).exists():
            problems.append(
                f"{label}: {vdir.name}/{name} is missing (the {spec.backend} backend loads it with {spec.filename})"
            )
    if spec.python_model and not (vdir / "model.py").exists():
        problems.append(f"{label}: {vdir.name}/model.py is missing (the Python backend runs it)")
    try:
        info = inspect_artifact(artifact)
        if info.kind != spec.artifact_kind:
            problems.append(f"{label}: {spec.filename} is a {info.kind} artifact, not {spec.artifact_kind}")
            return
        sig = wire_signature(info, spec)
    except PolicyExportError as exc:
        problems.append(f"{label}: {exc}")
        return
    if spec.key == "tensorrt":
        problems.extend(f"{label}: {p}" for p in profile_problems(artifact, cfg.max_batch_size))
    for diff in signature_differences(config_sig, sig):
        problems.append(f"{label}: {diff.replace('the new artifact', f'{vdir.name}/{spec.filename}')}")
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    _check_parameters(params, version, info.metadata, spec.filename, label, problems)
    if spec.artifact_kind == "openvino":
        bf16 = info.metadata.quantization.get("inference_precision") == "bf16"
        if bf16 != (params.get("HINT_BF16", "").upper() == "YES"):
            problems.append(
                f"{label}: {spec.filename} is a {info.metadata.precision} artifact but HINT_BF16 is "
                f"{params.get('HINT_BF16', 'not set')!r}; the OpenVINO backend would run it at another precision "
                "(regenerate the config with triton-repo)"
            )
    digest_key = version_key(version, VersionParam.SHA256)
    if digest_key in params and params[digest_key] != file_sha256(artifact):
        problems.append(
            f"{label}: {spec.filename} changed after the config was written ({digest_key} differs); regenerate it"
        )


def _client_fields(meta: ArtifactMetadata) -> dict[str, str]:
    """What a client takes from a version's metadata, encoded as the flat parameters spell it (the contract's encoders)."""
    s = meta.spec
    return {
        ModelParam.CHUNK_SIZE: str(s.chunk_size),
        ModelParam.N_ACTION_STEPS: str(s.n_action_steps),
        ModelParam.HOST: encode_json(s.host.to_dict()),
        ModelParam.FAMILY: encode_json(s.family),
        ModelParam.NORMALIZATION_HASH: s.norm_hash,
        ModelParam.STATE_DIM: str(s.state_dim),
        ModelParam.ACTION_DIM: str(s.action_dim),
        ModelParam.CAMERAS: encode_cameras(s.cameras),
        ModelParam.IMAGE_FORMAT: str(meta.image_format),
        VersionParam.PRECISION: str(meta.precision),
        ModelParam.POLICY_TYPE: s.policy_type,
        # Not flat parameters, but what the client reads from the metadata JSON too.
        "signature": encode_json(s.signature.to_dict()),
        "normalization": json.dumps(s.normalization, sort_keys=True),
    }


# Flat parameters written per version (``version.N.<field>``) and once per model (the latest version's).
_PER_VERSION = (
    VersionParam.N_ACTION_STEPS,
    VersionParam.HOST,
    VersionParam.FAMILY,
    VersionParam.NORMALIZATION_HASH,
    VersionParam.PRECISION,
)
_PER_MODEL = (
    ModelParam.CHUNK_SIZE,
    ModelParam.STATE_DIM,
    ModelParam.ACTION_DIM,
    ModelParam.CAMERAS,
    ModelParam.IMAGE_FORMAT,
    ModelParam.POLICY_TYPE,
)
_LATEST = (ModelParam.N_ACTION_STEPS, ModelParam.HOST, ModelParam.FAMILY, ModelParam.NORMALIZATION_HASH)


def _check_parameters(
    params: dict[str, str], version: int, meta: ArtifactMetadata, filename: str, label: str, problems: list[str]
) -> None:
    """Cross-check the three places a version's policy settings live: the model file's own metadata,
    the ``version.N.metadata`` JSON (what PolicyClient reads first) and the flat parameters.

    They are written together, so any disagreement is a hand edit or a file swapped in later, and
    a client would run the shim with settings the model was not exported with.
    """
    truth = _client_fields(meta)
    latest = decode_names(params.get(ModelParam.VERSIONS))[-1:] == (str(version),)
    # version.N.metadata first, then the model-wide record a client falls back to (the latest version's).
    for key in (version_key(version, VersionParam.METADATA), *([METADATA_KEY] if latest else [])):
        if key not in params:
            continue
        try:
            recorded = _client_fields(ArtifactMetadata.from_json(params[key]))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{label}: parameter {key} is not policy-export metadata ({type(exc).__name__}: {exc})")
        else:
            for name, value in recorded.items():
                if value != truth[name]:
                    problems.append(
                        f"{label}: parameter {key} says {name} {value!r} but {filename} has {truth[name]!r}; "
                        "regenerate the config (triton-repo --force)"
                    )
    flat = {version_key(version, n): truth[n] for n in _PER_VERSION}
    if latest:  # model-wide values are the latest version's
        flat |= {str(n): truth[n] for n in (*_PER_MODEL, *_LATEST)}
    for name, value in flat.items():
        if name in params and params[name] != value:
            problems.append(f"{label}: parameter {name} is {params[name]!r} but {filename} has {value!r}")
