"""What a Triton server says it serves, read and checked without talking to it.

Split out of :mod:`policy_export.runtime.triton` so that the pure half of the Triton backend
(the address, the model's policy metadata rebuilt from its config ``parameters``, the served
signature check and the model's identity) lives apart from the connection and its deadlines
(:class:`~policy_export.runtime.triton.TritonCore`): these functions take the server's JSON
answers, so the contract tests run them on plain dicts, and nothing here imports
``tritonclient``. Every name is re-exported by :mod:`policy_export.runtime.triton`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from policy_export import triton_contract as contract
from policy_export.dtypes import TRITON_WIRE_TYPES
from policy_export.enums import ImageFormat, Precision
from policy_export.errors import BadInputError
from policy_export.spec import METADATA_KEY, ArtifactMetadata, HostDecl, PolicySpec, check_spec_record
from policy_export.triton_contract import ModelParam, VersionParam

PROTOCOLS = ("grpc", "http")
#: numpy dtype name -> Triton wire type (the one table, :mod:`policy_export.dtypes`).
WIRE_TYPES = TRITON_WIRE_TYPES

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):\d{1,5}$")


def split_url(url: str, protocol: str | None) -> tuple[str, str]:
    """``host:port`` and protocol; a ``grpc://`` / ``http://`` prefix picks the protocol.

    The address is checked here because tritonclient's own errors for a malformed one are a
    ``ValueError`` traceback (HTTP) or a misleading "secure channel" failure (gRPC).
    """
    address, scheme = url.strip(), None
    for name in PROTOCOLS:
        if address.startswith(f"{name}://"):
            address, scheme = address[len(name) + 3 :], name
            if protocol not in (None, name):
                raise BadInputError(f"Triton URL {url!r} says {name} but protocol={protocol!r} was asked for")
            break
    if address.startswith("https://"):
        raise BadInputError(
            f"Triton URL {url!r}: TLS is not supported by this client; use a plain http:// or grpc:// URL"
        )
    protocol = scheme or protocol or "grpc"
    if protocol not in PROTOCOLS:
        raise BadInputError(f"Triton protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    address = address.rstrip("/")
    if not _HOST_PORT.fullmatch(address):
        raise BadInputError(
            f"Triton URL {url!r}: expected host:port (e.g. 127.0.0.1:8001), optionally after grpc:// or http://"
        )
    return address, protocol


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def resolve_version(requested: str, model_meta: dict[str, Any], where: str) -> str:
    """The version the client will talk to. Without one asked for, the newest version the server
    lists (what Triton serves an unversioned request), pinned so that a newer version loaded
    mid-episode cannot change the model under a running shim."""
    served = [str(v) for v in model_meta.get("versions", [])]
    if requested:
        if served and requested not in served:
            raise BadInputError(f"{where}: version {requested} is not served (versions: {', '.join(served)})")
        return requested
    numeric = [int(v) for v in served if v.isdigit()]
    return str(max(numeric)) if numeric else ""


def wire_names(config: dict[str, Any]) -> dict[str, str]:
    """Policy tensor name -> name on the wire (``state`` -> ``state__0`` for TorchScript models)."""
    return contract.wire_names(_parameters(config))


def metadata_from_triton(
    config: dict[str, Any], model_meta: dict[str, Any], where: str, version: str = ""
) -> ArtifactMetadata:
    """The policy metadata a Triton model carries in its config ``parameters``.

    ``policy-export triton-repo`` records each version's full artifact metadata
    (``version.<v>.metadata``); without it the metadata is rebuilt from the per-model policy
    parameters (``chunk_size``, ``n_action_steps``, ``cameras``, ...) and the served signature.
    """
    params = _parameters(config)
    for key in (contract.version_key(version, VersionParam.METADATA), METADATA_KEY):
        if params.get(key):
            try:
                return ArtifactMetadata.from_json(params[key])
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInputError(f"{where}: config parameter {key!r} is not policy-export metadata ({exc})") from exc
    needed = (ModelParam.CHUNK_SIZE, ModelParam.N_ACTION_STEPS, ModelParam.CAMERAS)
    missing = [str(k) for k in needed if k not in params]
    if missing:
        raise BadInputError(
            f"{where}: model config has no policy parameters ({', '.join(missing)}); "
            "generate the repository with `policy-export triton-repo` so the client can check what it talks to"
        )

    def param(name: VersionParam) -> str:
        return contract.version_value(params, version, name)

    wire = wire_names(config)
    outputs = {o["name"]: o for o in model_meta.get("outputs", [])}
    inputs = {i["name"]: i for i in model_meta.get("inputs", [])}
    state, chunk = inputs.get(wire.get("state", "state")), outputs.get(wire.get("action_chunk", "action_chunk"))
    if state is None or chunk is None:
        raise BadInputError(
            f"{where}: model signature {sorted(inputs)} -> {sorted(outputs)} is not a policy-export core "
            "(needs input 'state' and output 'action_chunk')"
        )
    try:
        cameras = contract.decode_cameras(params[ModelParam.CAMERAS])
        spec = PolicySpec(
            policy_type=params.get(ModelParam.POLICY_TYPE, "act"),
            state_key=params.get("state_key", "observation.state"),
            state_dim=int(state["shape"][-1]),
            action_key=params.get("action_key", "action"),
            action_dim=int(chunk["shape"][-1]),
            cameras=cameras,
            chunk_size=int(params[ModelParam.CHUNK_SIZE]),
            n_action_steps=int(param(VersionParam.N_ACTION_STEPS)),
            normalization=json.loads(params["normalization"]) if params.get("normalization") else {},
            norm_hash=param(VersionParam.NORMALIZATION_HASH),
            host=_host(params, version),
        )
        check_spec_record(spec.to_dict())  # types and bounds, as for a file's metadata
        image_format = ImageFormat(params.get(ModelParam.IMAGE_FORMAT, ImageFormat.FLOAT32))
        precision = Precision(param(VersionParam.PRECISION) or Precision.FP32)
    except (ValueError, KeyError, TypeError) as exc:  # a hand-edited config: one line, not a traceback
        raise BadInputError(
            f"{where}: model config parameters are not valid policy metadata ({type(exc).__name__}: {exc}); "
            "regenerate the repository with `policy-export triton-repo`"
        ) from exc
    return ArtifactMetadata(
        spec=spec,
        artifact_kind=params.get(ModelParam.ARTIFACT_KIND, "triton"),
        image_format=image_format,
        precision=precision,
    )


def _host(params: dict[str, str], version: str) -> HostDecl:
    """The host declaration of a repository without version metadata: the ``host`` parameter, or (written
    before the family seam, ACT only) the legacy ``temporal_ensemble_coeff`` one."""
    text = contract.version_value(params, version, VersionParam.HOST)
    if text:
        return HostDecl.from_dict(json.loads(text))
    return HostDecl(ensemble_coeff=contract.decode_coeff(params.get(contract.LEGACY_TEMPORAL_ENSEMBLE_COEFF)))


def check_signature(
    meta: ArtifactMetadata,
    model_meta: dict[str, Any],
    max_batch_size: int,
    where: str,
    wire: dict[str, str] | None = None,
) -> None:
    """The server's inputs/outputs must be exactly what the client will send and read."""
    wire = wire or {}
    problems = []
    expected = {**meta.input_shapes(), **meta.output_shapes()}
    dtypes = {n: {WIRE_TYPES[d]} for n, d in meta.input_dtypes().items()}
    for name, dtype in meta.output_dtypes().items():  # an fp16 engine may answer in fp16
        dtypes[name] = {WIRE_TYPES[dtype], "FP16"} if meta.precision == "fp16" else {WIRE_TYPES[dtype]}
    served = {t["name"]: t for t in [*model_meta.get("inputs", []), *model_meta.get("outputs", [])]}
    for policy_name, shape in expected.items():
        name = wire.get(policy_name, policy_name)
        if name not in served:
            problems.append(f"no tensor {name!r}")
            continue
        dims = [int(d) for d in served[name]["shape"]]
        want = [-1, *contract.wire_dims(tuple(int(d) for d in shape[1:]))]
        if max_batch_size == 0 and len(dims) == len(shape) - 1:
            dims = [-1, *dims]
        if (
            len(dims) != len(want)
            or any(d != w for d, w in zip(dims[1:], want[1:], strict=False))
            or dims[0] not in (-1, 1)
        ):
            problems.append(f"{name} shape {dims} != {want}")
        if served[name]["datatype"] not in dtypes[policy_name]:
            problems.append(f"{name} type {served[name]['datatype']} != {'|'.join(sorted(dtypes[policy_name]))}")
    extra = sorted(set(served) - {wire.get(n, n) for n in expected})
    if extra:
        problems.append(f"unexpected tensors {extra}")
    if problems:
        raise BadInputError(
            f"{where}: served model differs from its policy metadata: {'; '.join(problems)}; "
            "regenerate the repository from the exported artifact (policy-export triton-repo)"
        )


@dataclass(frozen=True)
class ModelIdentity:
    """What makes a served model *the* model the client checked: not its name or version number,
    which a redeploy can reuse for different weights."""

    signature: tuple[tuple[str, str, tuple[int, ...]], ...]
    norm_hash: str
    sha256: str

    @classmethod
    def of(
        cls, config: dict[str, Any], model_meta: dict[str, Any], meta: ArtifactMetadata, version: str
    ) -> ModelIdentity:
        tensors = [*model_meta.get("inputs", []), *model_meta.get("outputs", [])]
        signature = tuple(sorted((t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in tensors))
        return cls(
            signature,
            meta.spec.norm_hash,
            _parameters(config).get(contract.version_key(version, VersionParam.SHA256), ""),
        )

    def differences(self, other: ModelIdentity) -> list[str]:
        out = []
        if self.signature != other.signature:
            out.append("input/output signature differs")
        if self.norm_hash != other.norm_hash:
            out.append(f"normalization hash {other.norm_hash[:12] or '?'} != {self.norm_hash[:12] or '?'}")
        if self.sha256 != other.sha256:
            out.append(f"model file sha256 {other.sha256[:12] or '?'} != {self.sha256[:12] or '?'}")
        return out
