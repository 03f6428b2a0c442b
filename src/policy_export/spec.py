"""The policy's interface as seen from outside the network, and the metadata artifacts carry.

This module is plain Python (json + dataclasses) so that the robot-side runtime shim can
read an artifact's metadata without importing torch or lerobot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

METADATA_KEY = "policy_export"
METADATA_SCHEMA = 1


@dataclass(frozen=True)
class CameraSpec:
    """One camera input: LeRobot key, exported input name, and CHW shape."""

    key: str
    input_name: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class PolicySpec:
    """Everything a caller of the stateless core must know, read from the checkpoint."""

    policy_type: str
    state_key: str
    state_dim: int
    action_key: str
    action_dim: int
    cameras: tuple[CameraSpec, ...]
    chunk_size: int
    n_action_steps: int
    temporal_ensemble_coeff: float | None
    normalization: dict[str, str]
    norm_hash: str

    @property
    def input_names(self) -> list[str]:
        return ["state", *(c.input_name for c in self.cameras)]

    @property
    def output_names(self) -> list[str]:
        return ["action_chunk"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = [asdict(c) | {"shape": list(c.shape)} for c in self.cameras]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicySpec:
        cams = tuple(
            CameraSpec(key=c["key"], input_name=c["input_name"], shape=tuple(c["shape"]))  # type: ignore[arg-type]
            for c in d["cameras"]
        )
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k != "cameras"}
        return cls(cameras=cams, **fields)


def camera_input_names(camera_keys: list[str]) -> list[str]:
    """``image`` for one camera, ``image_<suffix>`` for several (suffix of the LeRobot key)."""
    if len(camera_keys) == 1:
        return ["image"]
    return ["image_" + k.rsplit(".", 1)[-1] for k in camera_keys]


@dataclass
class ArtifactMetadata:
    """Metadata embedded in every exported artifact (ONNX metadata_props, TorchScript extra file)."""

    spec: PolicySpec
    artifact_kind: str
    image_format: str = "float32"
    precision: str = "fp32"
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
        d["spec"] = PolicySpec.from_dict(d["spec"])
        return cls(**d)

    def input_shapes(self) -> dict[str, tuple[int | str, ...]]:
        """Per-input shape with a symbolic ``"batch"`` axis, in the artifact's image format."""
        shapes: dict[str, tuple[int | str, ...]] = {"state": ("batch", self.spec.state_dim)}
        for cam in self.spec.cameras:
            c, h, w = cam.shape
            shapes[cam.input_name] = ("batch", h, w, c) if self.image_format == "uint8" else ("batch", c, h, w)
        return shapes

    def input_dtypes(self) -> dict[str, str]:
        img = "uint8" if self.image_format == "uint8" else "float32"
        return {"state": "float32", **{c.input_name: img for c in self.spec.cameras}}
