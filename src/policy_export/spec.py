"""The policy's interface as seen from outside the network, and the metadata artifacts carry.

This module is plain Python (json + dataclasses) so that the robot-side runtime shim can
read an artifact's metadata without importing torch or lerobot.

The spec is family-neutral: what every core shares (state, cameras, the ``action_chunk``
output, normalization) is a field, the input signature's family-dependent parts are data
(``n_obs_steps`` history axis, host-drawn ``noise_inputs``), and everything else a family
needs is in ``family`` (a JSON object its family module reads and writes). Schema 1
(ACT-only, ``temporal_ensemble_coeff`` at the top level) is read into the same shape.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from policy_export.enums import ImageFormat, Precision

METADATA_KEY = "policy_export"
#: 2: family-neutral spec (``n_obs_steps``, ``noise_inputs``, ``family``); 1: ACT only.
METADATA_SCHEMA = 2


@dataclass(frozen=True)
class CameraSpec:
    """One camera input: LeRobot key, exported input name, and CHW shape."""

    key: str
    input_name: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class NoiseInput:
    """A standard-normal float32 input the host draws for a sampling core (shape without batch).

    Random draws are inputs rather than graph ops so that a core is a pure function:
    exact parity with LeRobot fed the same draws, and the same answer from every runtime.
    """

    name: str
    shape: tuple[int, ...]


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
    #: Observation history the core takes, as an axis after the batch; None: no such axis.
    n_obs_steps: int | None = None
    noise_inputs: tuple[NoiseInput, ...] = ()
    #: Family-specific settings, owned by the family's module (JSON-able values only).
    family: dict[str, Any] = field(default_factory=dict)

    @property
    def temporal_ensemble_coeff(self) -> float | None:
        """Ensembling coefficient when the family ensembles chunks (None: queue only)."""
        value = self.family.get("temporal_ensemble_coeff")
        return None if value is None else float(value)

    @property
    def input_names(self) -> list[str]:
        return ["state", *(c.input_name for c in self.cameras), *(n.name for n in self.noise_inputs)]

    @property
    def observation_input_names(self) -> list[str]:
        """Inputs that come from the robot (the rest are drawn by the host)."""
        return ["state", *(c.input_name for c in self.cameras)]

    @property
    def output_names(self) -> list[str]:
        return ["action_chunk"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = [asdict(c) | {"shape": list(c.shape)} for c in self.cameras]
        d["noise_inputs"] = [{"name": n.name, "shape": list(n.shape)} for n in self.noise_inputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicySpec:
        d = dict(d)
        if "family" not in d:  # schema 1: ACT's one family field sat at the top level
            d["family"] = {"temporal_ensemble_coeff": d.pop("temporal_ensemble_coeff", None)}
        cams = tuple(
            CameraSpec(key=c["key"], input_name=c["input_name"], shape=tuple(c["shape"])) for c in d["cameras"]
        )
        noise = tuple(NoiseInput(n["name"], tuple(int(x) for x in n["shape"])) for n in d.get("noise_inputs", ()))
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("cameras", "noise_inputs")}
        return cls(cameras=cams, noise_inputs=noise, **fields)


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

    def to_json(self) -> str:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArtifactMetadata:
        d = json.loads(text)
        if int(d.get("schema", 1)) > METADATA_SCHEMA:
            raise ValueError(
                f"metadata schema {d['schema']} is newer than this policy-export reads ({METADATA_SCHEMA}); upgrade policy-export"
            )
        d["spec"] = PolicySpec.from_dict(d["spec"])
        d["schema"] = METADATA_SCHEMA  # read into today's shape (schema 1 upgraded in from_dict)
        # Checked here, where metadata enters: an unknown word is a ValueError, made one line by the callers.
        d["image_format"] = ImageFormat(d.get("image_format", ImageFormat.FLOAT32))
        d["precision"] = Precision(d.get("precision", Precision.FP32))
        return cls(**d)

    def input_shapes(self) -> dict[str, tuple[int | str, ...]]:
        """Per-input shape with a symbolic ``"batch"`` axis, in the artifact's image format."""
        spec = self.spec
        lead: tuple[int | str, ...] = ("batch",) if spec.n_obs_steps is None else ("batch", spec.n_obs_steps)
        shapes: dict[str, tuple[int | str, ...]] = {"state": (*lead, spec.state_dim)}
        for cam in spec.cameras:
            c, h, w = cam.shape
            shapes[cam.input_name] = (*lead, h, w, c) if self.image_format == ImageFormat.UINT8 else (*lead, c, h, w)
        for noise in spec.noise_inputs:
            shapes[noise.name] = ("batch", *noise.shape)
        return shapes

    def input_dtypes(self) -> dict[str, str]:
        img = "uint8" if self.image_format == ImageFormat.UINT8 else "float32"
        return {
            "state": "float32",
            **{c.input_name: img for c in self.spec.cameras},
            **{n.name: "float32" for n in self.spec.noise_inputs},
        }
