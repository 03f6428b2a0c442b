"""The policy's interface as seen from outside the network, and the metadata artifacts carry.

This module is plain Python (json + dataclasses) so that the robot-side runtime shim can
read an artifact's metadata without importing torch or lerobot.

Schema 3 makes the exported signature data, declared by the policy's family
(:mod:`policy_export.declarations`) and read by every shared layer:

- :class:`Signature`: each input and output as a :class:`TensorDecl` (name, :class:`Role`,
  shape with symbolic dims resolved through ``dims``, dtype, units);
- :class:`HostDecl`: what the robot's host does around the core (observation history,
  temporal ensembling or an action queue, tokenizer and RTC settings);
- ``family``: the family's own fields (JSON values; the family declares their types and bounds).

The common fields (state, cameras, action, chunk, normalization) stay fields. Shared code
never asks "is this ACT?" nor tests a family's field: it reads roles, shapes and the host
declaration. Schemas 1 (ACT only) and 2 (``n_obs_steps`` / ``noise_inputs`` /
``family.temporal_ensemble_coeff``) are read into schema 3 (:func:`upgrade_spec`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from policy_export.enums import ImageFormat, Precision

METADATA_KEY = "policy_export"
#: 3: declared signature + host + family fields; 2: family-neutral spec (``n_obs_steps``,
#: ``noise_inputs``, ``family``); 1: ACT only.
METADATA_SCHEMA = 3
BATCH = "batch"
#: Symbolic dims every signature defines (families add theirs: ``n_obs``, ``horizon``, ``L`` ...).
STATE_DIM, ACTION_DIM, CHUNK = "state_dim", "action_dim", "chunk"
ACTION_CHUNK = "action_chunk"


class Role(StrEnum):
    """What an input or output *is*; the shared layers decide who provides it from this alone."""

    #: The robot's state (``state_key``), robot units.
    STATE = "state"
    #: One camera (its LeRobot key in ``TensorDecl.key``): float CHW in [0, 1], or uint8 HWC frames.
    CAMERA = "camera"
    #: Task text tokenized on the host, and its attention mask.
    LANG_TOKENS = "lang_tokens"
    LANG_MASK = "lang_mask"
    #: Standard-normal draws the host makes per chunk (the initial sample) ...
    NOISE = "noise"
    #: ... and per denoising step (DDPM's fresh draws).
    STEP_NOISE = "step_noise"
    #: Real-time chunking: the unexecuted rest of the previous chunk, how many rows are real, the delay in steps.
    RTC_PREV_CHUNK = "rtc_prev_chunk"
    RTC_PREV_LEN = "rtc_prev_len"
    RTC_DELAY = "rtc_delay"
    #: The output: actions ``[B, chunk, action_dim]`` in robot units.
    ACTION_CHUNK = "action_chunk"


#: Inputs that come from the robot's observation (the rest are made by the host).
OBSERVATION_ROLES = frozenset({Role.STATE, Role.CAMERA})
#: Inputs the host draws from a standard normal, one draw per chunk prediction.
DRAWN_ROLES = frozenset({Role.NOISE, Role.STEP_NOISE})


@dataclass(frozen=True)
class CameraSpec:
    """One camera input: LeRobot key, exported input name, and CHW shape."""

    key: str
    input_name: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class TensorDecl:
    """One input or output of the exported core.

    ``shape``: ints, the symbolic batch axis ``"batch"`` (always first), or names of
    :attr:`Signature.dims`. A camera is declared in float CHW layout; a uint8 artifact takes
    the same camera as uint8 HWC (:meth:`ArtifactMetadata.input_shapes` applies that).
    """

    name: str
    role: Role
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    units: str = ""
    #: The LeRobot feature key (observation roles), else "".
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": str(self.role),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "units": self.units,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorDecl:
        return cls(
            name=d["name"],
            role=Role(d["role"]),
            shape=tuple(d["shape"]),
            dtype=d.get("dtype", "float32"),
            units=d.get("units", ""),
            key=d.get("key", ""),
        )


@dataclass(frozen=True)
class Signature:
    """The exported core's inputs and outputs, in call order, with the values of their symbolic dims."""

    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    dims: dict[str, int] = field(default_factory=dict)

    def resolve(self, t: TensorDecl) -> tuple[int | str, ...]:
        """``t``'s shape with every named dim replaced by its value (``"batch"`` stays)."""
        return tuple(d if isinstance(d, int) or d == BATCH else self.dims[d] for d in t.shape)

    def with_role(self, *roles: Role) -> tuple[TensorDecl, ...]:
        return tuple(t for t in self.inputs if t.role in roles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": dict(self.dims),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorDecl.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorDecl.from_dict(t) for t in d["outputs"]),
            dims=dict(d.get("dims") or {}),
        )


@dataclass(frozen=True)
class HostDecl:
    """What the robot's host does around the stateless core, declared by the family.

    - ``history``: observation steps each observation input carries on axis 1 (LeRobot's
      ``populate_queues``); None: one step and no such axis.
    - ``ensemble_coeff``: ACT-style temporal ensembling ``exp(-c * i)`` over every chunk
      (queried each step); None: an action queue of ``n_action_steps`` per chunk.
    - ``tokenizer`` / ``rtc``: settings of the host's tokenizer and of real-time chunking,
      for families whose signature has language or RTC inputs (JSON values).
    """

    history: int | None = None
    ensemble_coeff: float | None = None
    tokenizer: dict[str, Any] | None = None
    rtc: dict[str, Any] | None = None

    @property
    def merge(self) -> str:
        return "queue" if self.ensemble_coeff is None else "ensemble"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HostDecl:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class NoiseInput:
    """A standard-normal float32 input the host draws (name, shape without batch): a view of the signature."""

    name: str
    shape: tuple[int, ...]


def observation_inputs(
    state_dim: int, cameras: tuple[CameraSpec, ...], state_key: str = "observation.state", lead: tuple[str, ...] = ()
) -> tuple[TensorDecl, ...]:
    """``state`` and one input per camera, with ``lead`` dims (e.g. ``("n_obs",)``) after the batch axis."""
    del state_dim  # the shape names it: "state_dim"
    state = TensorDecl("state", Role.STATE, (BATCH, *lead, STATE_DIM), units="robot", key=state_key)
    cams = tuple(
        TensorDecl(c.input_name, Role.CAMERA, (BATCH, *lead, *c.shape), units="[0, 1]", key=c.key) for c in cameras
    )
    return (state, *cams)


def action_chunk_output() -> TensorDecl:
    return TensorDecl(ACTION_CHUNK, Role.ACTION_CHUNK, (BATCH, CHUNK, ACTION_DIM), units="robot")


@dataclass(frozen=True)
class PolicySpec:
    """Everything a caller of the stateless core must know, read from the checkpoint."""

    policy_type: str
    state_key: str
    state_dim: int
    action_key: str
    action_dim: int
    cameras: tuple[CameraSpec, ...]
    #: Steps in the core's ``action_chunk`` output.
    chunk_size: int
    #: Actions the host's queue takes from each chunk.
    n_action_steps: int
    normalization: dict[str, str]
    norm_hash: str
    #: The exported signature; None: state + cameras -> action_chunk (filled in).
    signature: Signature = None  # type: ignore[assignment]  # filled in __post_init__
    host: HostDecl = field(default_factory=HostDecl)
    #: The family's own settings (JSON-able values; types and bounds declared by the family).
    family: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.signature is None:
            sig = Signature(
                observation_inputs(self.state_dim, self.cameras, self.state_key),
                (action_chunk_output(),),
                {STATE_DIM: self.state_dim, ACTION_DIM: self.action_dim, CHUNK: self.chunk_size},
            )
            object.__setattr__(self, "signature", sig)

    # -- views of the declaration, for callers -------------------------------------------------
    @property
    def temporal_ensemble_coeff(self) -> float | None:
        """The host's ensembling coefficient (None: action queue)."""
        return self.host.ensemble_coeff

    @property
    def n_obs_steps(self) -> int | None:
        """The host's observation history (None: no history axis)."""
        return self.host.history

    @property
    def noise_inputs(self) -> tuple[NoiseInput, ...]:
        sig = self.signature
        return tuple(NoiseInput(t.name, tuple(int(d) for d in sig.resolve(t)[1:])) for t in sig.with_role(*DRAWN_ROLES))

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.signature.inputs]

    @property
    def observation_input_names(self) -> list[str]:
        """Inputs that come from the robot (the rest are made by the host)."""
        return [t.name for t in self.signature.with_role(*OBSERVATION_ROLES)]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.signature.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_type": self.policy_type,
            "state_key": self.state_key,
            "state_dim": self.state_dim,
            "action_key": self.action_key,
            "action_dim": self.action_dim,
            "cameras": [asdict(c) | {"shape": list(c.shape)} for c in self.cameras],
            "chunk_size": self.chunk_size,
            "n_action_steps": self.n_action_steps,
            "normalization": dict(self.normalization),
            "norm_hash": self.norm_hash,
            "signature": self.signature.to_dict(),
            "host": self.host.to_dict(),
            "family": dict(self.family),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicySpec:
        """A schema-3 spec record (older ones go through :func:`upgrade_spec` first)."""
        cams = tuple(
            CameraSpec(key=c["key"], input_name=c["input_name"], shape=tuple(c["shape"])) for c in d["cameras"]
        )
        return cls(
            policy_type=d["policy_type"],
            state_key=d["state_key"],
            state_dim=d["state_dim"],
            action_key=d["action_key"],
            action_dim=d["action_dim"],
            cameras=cams,
            chunk_size=d["chunk_size"],
            n_action_steps=d["n_action_steps"],
            normalization=d["normalization"],
            norm_hash=d["norm_hash"],
            signature=Signature.from_dict(d["signature"]),
            host=HostDecl.from_dict(d["host"]),
            family=d.get("family") or {},
        )

    def replace(self, **changes: Any) -> PolicySpec:
        """A copy with ``changes``; the default signature is rebuilt when the fields it reads change."""
        if "signature" not in changes and self.signature == PolicySpec(**_common(self)).signature:
            changes["signature"] = None
        return replace(self, **changes)


def _common(spec: PolicySpec) -> dict[str, Any]:
    return {k: getattr(spec, k) for k in PolicySpec.__dataclass_fields__ if k not in ("signature", "host", "family")}


def upgrade_spec(d: dict[str, Any], schema: int) -> dict[str, Any]:
    """A schema-1 or -2 spec record as schema 3 reads it (same meaning, today's layout).

    Schema 1 (ACT only) had ``temporal_ensemble_coeff`` at the top level; schema 2 had
    ``n_obs_steps``, ``noise_inputs`` and the coefficient in ``family``. Their signature was
    always state, cameras (with the history axis when ``n_obs_steps`` was set), then the noise
    inputs; this rebuilds it as the declaration those artifacts were exported with.
    """
    if schema >= 3:
        return d
    d = dict(d)
    family = dict(d.pop("family", None) or {})
    coeff = family.pop("temporal_ensemble_coeff", None) if "temporal_ensemble_coeff" in family else None
    if schema == 1 or "temporal_ensemble_coeff" in d:
        coeff = d.pop("temporal_ensemble_coeff", coeff)
    n_obs = d.pop("n_obs_steps", None)
    noise = d.pop("noise_inputs", None) or []
    cameras = tuple(CameraSpec(c["key"], c["input_name"], tuple(c["shape"])) for c in d["cameras"])
    lead = ("n_obs",) if n_obs is not None else ()
    dims = {STATE_DIM: d["state_dim"], ACTION_DIM: d["action_dim"], CHUNK: d["chunk_size"]}
    if n_obs is not None:
        dims["n_obs"] = n_obs
    drawn = tuple(
        TensorDecl(n["name"], Role.STEP_NOISE if n["name"] == "step_noise" else Role.NOISE, (BATCH, *n["shape"]))
        for n in noise
    )
    sig = Signature(
        (*observation_inputs(d["state_dim"], cameras, d["state_key"], lead), *drawn), (action_chunk_output(),), dims
    )
    d["signature"] = sig.to_dict()
    d["host"] = HostDecl(history=n_obs, ensemble_coeff=coeff).to_dict()
    d["family"] = family
    return d


#: Bounds on what metadata may claim, checked before anything is sized from it: far above any
#: real policy, far below what would exhaust a host's memory when a buffer is allocated.
MAX_DIM = 1 << 16  # a state or action dimension, a chunk, a history
#: A family's symbolic dim (a vocabulary, a horizon): the per-tensor element bound below still holds.
MAX_SYMBOL = 1 << 24
MAX_IMAGE_SIDE = 1 << 14
MAX_TENSORS = 64
MAX_RANK = 8
#: Elements of one tensor for one batch row (4 GiB of float32 / 4).
MAX_ELEMENTS = 1 << 28
#: dtype words a signature may use (numpy names).
DTYPES = frozenset({"float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool"})


def _int(d: dict[str, Any], key: str, where: str, lo: int = 1, hi: int = MAX_DIM) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}{key} is {value!r}, not an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{where}{key} = {value} is outside [{lo}, {hi}]")
    return value


def _str(d: dict[str, Any], key: str, where: str, empty: bool = False) -> str:
    value = d.get(key)
    if not isinstance(value, str) or (not empty and not value) or len(value) > 256 or "\n" in value:
        raise ValueError(f"{where}{key} is {value!r}, not a one-line name")
    return value


def check_spec_record(d: dict[str, Any]) -> None:
    """Types and bounds of every field of a schema-3 spec record, and that its parts agree.

    Raises ValueError naming the field (callers make it one line with the file's name).
    Runs before anything is built from the record, so that a hand-edited or damaged record
    (a chunk of 10**12 steps) is refused instead of sizing a buffer.
    """
    w = "spec."
    for key in ("policy_type", "state_key", "action_key"):
        _str(d, key, w)
    _str(d, "norm_hash", w, empty=True)
    state_dim, action_dim = _int(d, "state_dim", w), _int(d, "action_dim", w)
    chunk = _int(d, "chunk_size", w)
    _int(d, "n_action_steps", w, hi=chunk)
    norm = d.get("normalization")
    if not isinstance(norm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in norm.items()):
        raise ValueError(f"{w}normalization is not an object of strings")
    cams = d.get("cameras")
    if not isinstance(cams, list) or len(cams) > MAX_TENSORS:
        raise ValueError(f"{w}cameras is not a list of at most {MAX_TENSORS} cameras")
    for i, c in enumerate(cams):
        cw = f"{w}cameras[{i}]."
        if not isinstance(c, dict):
            raise ValueError(f"{cw[:-1]} is not an object")
        _str(c, "key", cw), _str(c, "input_name", cw)
        shape = c.get("shape")
        if not isinstance(shape, list) or len(shape) != 3:
            raise ValueError(f"{cw}shape is {shape!r}, not [C, H, W]")
        sd = dict(zip("CHW", shape, strict=True))
        _int(sd, "C", cw + "shape.", hi=4), _int(sd, "H", cw + "shape.", hi=MAX_IMAGE_SIDE)
        _int(sd, "W", cw + "shape.", hi=MAX_IMAGE_SIDE)
    fam = d.get("family", {})
    if not isinstance(fam, dict):
        raise ValueError(f"{w}family is not an object")
    host = d.get("host")
    if not isinstance(host, dict):
        raise ValueError(f"{w}host is not an object")
    if host.get("history") is not None:
        _int(host, "history", w + "host.")
    coeff = host.get("ensemble_coeff")
    if coeff is not None and (
        not isinstance(coeff, int | float) or isinstance(coeff, bool) or not 0 <= coeff <= 1e3 or coeff != coeff
    ):
        raise ValueError(f"{w}host.ensemble_coeff is {coeff!r}, not a number in [0, 1000] or null")
    for key in ("tokenizer", "rtc"):
        if host.get(key) is not None and not isinstance(host[key], dict):
            raise ValueError(f"{w}host.{key} is not an object or null")
    _check_signature_record(d, state_dim, action_dim, chunk)


def _check_signature_record(d: dict[str, Any], state_dim: int, action_dim: int, chunk: int) -> None:
    w = "spec.signature."
    sig = d.get("signature")
    if not isinstance(sig, dict):
        raise ValueError(f"{w[:-1]} is not an object")
    dims = sig.get("dims")
    if not isinstance(dims, dict):
        raise ValueError(f"{w}dims is not an object")
    for name in dims:
        if not isinstance(name, str) or name == BATCH:
            raise ValueError(f"{w}dims has a bad name {name!r}")
        _int(dims, name, w + "dims.", hi=MAX_SYMBOL)
    for name, value in ((STATE_DIM, state_dim), (ACTION_DIM, action_dim), (CHUNK, chunk)):
        if dims.get(name) != value:
            raise ValueError(f"{w}dims.{name} = {dims.get(name)!r} but spec says {value}")
    seen: set[str] = set()
    tensors: dict[str, list[dict[str, Any]]] = {}
    for part in ("inputs", "outputs"):
        items = sig.get(part)
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_TENSORS:
            raise ValueError(f"{w}{part} is not a list of 1 to {MAX_TENSORS} tensors")
        tensors[part] = items
        for i, t in enumerate(items):
            tw = f"{w}{part}[{i}]."
            if not isinstance(t, dict):
                raise ValueError(f"{tw[:-1]} is not an object")
            name = _str(t, "name", tw)
            if name in seen:
                raise ValueError(f"{tw}name {name!r} is declared twice")
            seen.add(name)
            try:
                role = Role(str(t.get("role")))
            except ValueError:
                raise ValueError(f"{tw}role {t.get('role')!r} is not one of {', '.join(Role)}") from None
            if (part == "outputs") != (role is Role.ACTION_CHUNK):
                raise ValueError(f"{tw}role {role} cannot be an {part[:-1]}")
            if t.get("dtype", "float32") not in DTYPES:
                raise ValueError(f"{tw}dtype {t.get('dtype')!r} is not one of {', '.join(sorted(DTYPES))}")
            shape = t.get("shape")
            if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK or shape[0] != BATCH:
                raise ValueError(f"{tw}shape {shape!r} is not ['batch', ...] of rank <= {MAX_RANK}")
            size = 1
            for j, dim in enumerate(shape[1:], 1):
                if isinstance(dim, str) and dim in dims:
                    size *= dims[dim]
                elif isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= MAX_SYMBOL:
                    size *= dim
                else:
                    raise ValueError(
                        f"{tw}shape[{j}] = {dim!r} is neither a dim of {w}dims nor an integer in [1, {MAX_SYMBOL}]"
                    )
            if size > MAX_ELEMENTS:
                raise ValueError(f"{tw}shape {shape} holds {size} elements per robot, more than {MAX_ELEMENTS}")
    outs = tensors["outputs"]
    if [o.get("name") for o in outs] != [ACTION_CHUNK] or outs[0].get("shape") != [BATCH, CHUNK, ACTION_DIM]:
        raise ValueError(f"{w}outputs must be action_chunk ['batch', 'chunk', 'action_dim'], got {outs!r}")
    cams = [t for t in tensors["inputs"] if t.get("role") == Role.CAMERA]
    want = [(c["input_name"], c["key"], list(c["shape"])) for c in d["cameras"]]
    got = [(t["name"], t.get("key", ""), list(t["shape"][-3:])) for t in cams]
    if got != want:
        raise ValueError(f"{w}inputs: camera inputs {got} != spec.cameras {want}")
    states = [t for t in tensors["inputs"] if t.get("role") == Role.STATE]
    if len(states) != 1 or states[0]["name"] != "state" or states[0]["shape"][-1] not in (STATE_DIM, state_dim):
        raise ValueError(f"{w}inputs must hold one input 'state' ending in state_dim, got {states!r}")
    history = d["host"].get("history")
    if history is not None and dims.get("n_obs") != history:
        raise ValueError(f"{w}dims.n_obs = {dims.get('n_obs')!r} but spec.host.history is {history}")


def camera_input_names(camera_keys: list[str]) -> list[str]:
    """``image`` for one camera, ``image_<suffix>`` for several (suffix of the LeRobot key)."""
    if len(camera_keys) == 1:
        return ["image"]
    return ["image_" + k.rsplit(".", 1)[-1] for k in camera_keys]


@dataclass
class ArtifactMetadata:
    """Metadata embedded in every exported artifact (ONNX metadata_props, TorchScript extra file)."""

    spec: PolicySpec
    #: An :class:`~policy_export.enums.ArtifactKind`, or ``"triton"`` for a model read back from a server.
    artifact_kind: str
    image_format: ImageFormat = ImageFormat.FLOAT32
    precision: Precision = Precision.FP32
    exporter: str = ""
    opset: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    schema: int = METADATA_SCHEMA
    #: Reduced-precision artifacts (``policy-export quantize``): runtime, inference precision hint,
    #: calibration source, the CPU it was calibrated and measured on, and what was measured there.
    quantization: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactMetadata:
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("spec"), dict):
            raise ValueError("not a JSON object with a 'spec' object")
        schema = d.get("schema", 1)
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise ValueError(f"schema {schema!r} is not a schema number")
        if schema > METADATA_SCHEMA:
            raise ValueError(
                f"metadata schema {d['schema']} is newer than this policy-export reads ({METADATA_SCHEMA}); upgrade policy-export"
            )
        spec_record = upgrade_spec(d["spec"], schema)
        check_spec_record(spec_record)  # types and bounds of every field, before anything is built from them
        d["spec"] = PolicySpec.from_dict(spec_record)
        d["schema"] = METADATA_SCHEMA  # read into today's shape (older schemas upgraded above)
        # Checked here, where metadata enters: an unknown word is a ValueError, made one line by the callers.
        d["image_format"] = ImageFormat(d.get("image_format", ImageFormat.FLOAT32))
        d["precision"] = Precision(d.get("precision", Precision.FP32))
        return cls(**d)

    def input_shapes(self) -> dict[str, tuple[int | str, ...]]:
        """Per-input shape with a symbolic ``"batch"`` axis, in the artifact's image format
        (a uint8 artifact takes its cameras as HWC frames)."""
        sig = self.spec.signature
        shapes: dict[str, tuple[int | str, ...]] = {}
        for t in sig.inputs:
            shape = sig.resolve(t)
            if t.role is Role.CAMERA and self.image_format == ImageFormat.UINT8:
                shape = (*shape[:-3], shape[-2], shape[-1], shape[-3])
            shapes[t.name] = shape
        return shapes

    def input_dtypes(self) -> dict[str, str]:
        uint8 = self.image_format == ImageFormat.UINT8
        return {t.name: "uint8" if uint8 and t.role is Role.CAMERA else t.dtype for t in self.spec.signature.inputs}

    def output_shapes(self) -> dict[str, tuple[int | str, ...]]:
        sig = self.spec.signature
        return {t.name: sig.resolve(t) for t in sig.outputs}

    def output_dtypes(self) -> dict[str, str]:
        return {t.name: t.dtype for t in self.spec.signature.outputs}
