"""LeRobot-style observation dicts -> the named inputs the exported core takes.

A robot loop that used LeRobot hands its policy ``{"observation.state": ...,
"observation.images.<camera>": ...}`` either raw (numpy HWC frames, no batch axis, as
``prepare_observation_for_inference`` takes them) or already as tensors (float CHW in
[0, 1], with or without the batch axis, as the preprocessor takes them). This adapter
accepts all of those, numpy or torch (duck-typed: torch is never imported here), and
produces exactly what the artifact expects: float32 CHW or raw uint8 HWC frames.

Values are checked too (``check_values``, on by default): NaN or inf in the state or an
image, and float images outside [0, 1] (a 0-255 frame passed as float) are one clear error,
because the core would turn them into plausible-looking but meaningless actions.

Everything is checked when the observation is given (``ObservationAdapter.__call__``, on the
caller's thread), although frames are converted only when a chunk is needed: a bad frame
must fail the control step it came with, not a later one (the realtime client converts on its
worker, which could only report it a tick late) and not never (a step that needs no chunk).
The check reads each frame once and allocates nothing (about 0.13 ms for a 480x640 float
frame here, nothing for uint8 frames, whose values are always valid).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from policy_export.errors import BadInputError
from policy_export.spec import ArtifactMetadata


def to_numpy(value: object, key: str) -> np.ndarray:
    """numpy, torch (any device) or nested lists -> numpy, without importing torch."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise BadInputError(f"{key}: cannot read a {type(value).__name__} as an array") from exc


def is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


@dataclass
class Prepared:
    """One control step's observation, checked; images are converted only when a chunk is needed.

    In queue mode most steps need no core call, so converting camera frames at every step
    would cost more than the shim itself.
    """

    adapter: ObservationAdapter
    observation: Mapping[str, object]
    state: np.ndarray  # [B, state_dim] float32
    batch_size: int
    #: The observation's state was a torch tensor (actions then come back as one).
    torch_input: bool

    def image(self, key: str) -> np.ndarray:
        """One camera's frames as numpy with the batch axis, checked against the state's batch."""
        img = self.adapter.image_batch(to_numpy(self.observation[key], key), key)
        if img.shape[0] != self.batch_size:
            raise BadInputError(
                f"{key}: batch size {img.shape[0]} != {self.batch_size} of {self.adapter.spec.state_key}"
            )
        return img

    def feed(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Core inputs for all robots, or for the robots (row indices) in ``rows``.

        Checks the frames again while converting them: this may run later on another thread
        (the realtime worker), and a frame written in place after the step was given must not
        reach the core either."""
        whole = rows is None or len(rows) == self.batch_size
        feed = {"state": self.state if whole else self.state[rows]}
        for cam in self.adapter.spec.cameras:
            img = self.image(cam.key)
            feed[cam.input_name] = self.adapter.convert(img if whole else img[rows], cam.key, cam.shape)
        return feed


#: How to turn the value checks off, named in every value error.
OPT_OUT = "check_inputs=False (INFERENCE_CHECK_INPUTS=0) skips this check if you know what you do"


class ObservationAdapter:
    """Converts observations for one artifact's inputs (names, shapes, image format)."""

    def __init__(self, metadata: ArtifactMetadata, *, check_values: bool = True) -> None:
        self.metadata = metadata
        self.spec = metadata.spec
        self.uint8 = metadata.image_format == "uint8"
        self.check_values = check_values

    def __call__(self, observation: Mapping[str, object]) -> Prepared:
        if not isinstance(observation, Mapping):
            raise BadInputError(
                f"observation must be a dict with {self.spec.state_key!r} and camera keys, got {type(observation).__name__}"
            )
        spec = self.spec
        key = spec.state_key
        missing = [k for k in (key, *(c.key for c in spec.cameras)) if k not in observation]
        if missing:
            raise BadInputError(
                f"observation has no {', '.join(map(repr, missing))} (keys: {', '.join(map(str, observation)) or 'none'})"
            )
        raw_state = observation[key]
        state = to_numpy(raw_state, key)
        if state.ndim not in (1, 2) or state.shape[-1] != spec.state_dim:
            raise BadInputError(
                f"{key}: shape {tuple(state.shape)} != ({spec.state_dim},) or (batch, {spec.state_dim})"
            )
        if state.dtype.kind in "bcmMV":  # astype would make 0/1, drop an imaginary part, or mean nothing
            raise BadInputError(f"{key}: dtype {state.dtype} is not a real number type; give float32 joint values")
        try:
            state = np.ascontiguousarray(state.reshape(-1, spec.state_dim), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"{key}: not numbers ({exc})") from None
        if state.shape[0] == 0:
            raise BadInputError(
                f"{key}: a batch of 0 robots (shape {tuple(state.shape)}); give one robot's state "
                f"({spec.state_dim},) or a batch (B, {spec.state_dim}) with B >= 1"
            )
        if self.check_values and not np.isfinite(state).all():
            bad = np.argwhere(~np.isfinite(state))[0].tolist()
            raise BadInputError(f"{key}: NaN or inf at {bad}; check the sensor reading; {OPT_OUT}")
        prep = Prepared(self, observation, state, state.shape[0], is_torch(raw_state))
        for cam in spec.cameras:  # checked now, converted when a chunk is needed (see the module docstring)
            self.check(prep.image(cam.key), cam.key, cam.shape)
        return prep

    @staticmethod
    def image_batch(img: np.ndarray, key: str) -> np.ndarray:
        """Add the batch axis LeRobot's AddBatchDimension step would add to a 3-D image."""
        if img.ndim == 3:
            img = img[None]
        if img.ndim != 4:
            raise BadInputError(
                f"{key}: expected an image [C, H, W] or [H, W, C] (optionally batched), got {tuple(img.shape)}"
            )
        return img

    def check(self, img: np.ndarray, key: str, chw: tuple[int, int, int]) -> str:
        """Shape, dtype and (``check_values``) values of a batched image, without converting it;
        returns its layout ("chw" or "hwc")."""
        c, h, w = chw
        tail = tuple(img.shape[1:])
        if tail == (c, h, w):
            layout = "chw"
        elif tail == (h, w, c):
            layout = "hwc"
        else:
            raise BadInputError(
                f"{key}: image shape {tail} is neither ({c}, {h}, {w}) nor ({h}, {w}, {c}) the policy was trained on"
            )
        if img.dtype != np.uint8 and img.dtype.kind != "f":
            # Structural, not a value check: an int16 frame is not "float values out of range",
            # and converting it as floats would feed the core 0-255 where it expects 0-1.
            raise BadInputError(
                f"{key}: image dtype {img.dtype} is not supported: give the uint8 frame (0-255) as the camera "
                "delivers it, or floats in [0, 1]"
            )
        if self.check_values and img.dtype != np.uint8:
            self._check_float_image(img, key)
        return layout

    def convert(self, img: np.ndarray, key: str, chw: tuple[int, int, int]) -> np.ndarray:
        """A batched image in any accepted layout/dtype -> what the artifact's input takes."""
        layout = self.check(img, key, chw)
        if self.uint8:
            return self._as_uint8_hwc(img, layout)
        return self._as_float_chw(img, layout)

    @staticmethod
    def _check_float_image(img: np.ndarray, key: str) -> None:
        lo, hi = float(np.min(img)), float(np.max(img))  # NaN propagates into both
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise BadInputError(f"{key}: NaN or inf in the image; check the camera driver; {OPT_OUT}")
        if lo < 0.0 or hi > 1.0:
            raise BadInputError(
                f"{key}: float image values in [{lo:g}, {hi:g}], outside [0, 1]: pass the uint8 frame as it is, "
                f"or divide a 0-255 float frame by 255; {OPT_OUT}"
            )

    @staticmethod
    def _as_float_chw(img: np.ndarray, layout: str) -> np.ndarray:
        # LeRobot's prepare_observation_for_inference: uint8 -> float32 / 255, then HWC -> CHW.
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / np.float32(255)
        if layout == "hwc":
            img = img.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(img, dtype=np.float32)

    @staticmethod
    def _as_uint8_hwc(img: np.ndarray, layout: str) -> np.ndarray:
        if layout == "chw":
            img = img.transpose(0, 2, 3, 1)
        if img.dtype != np.uint8:
            # Float frames in [0, 1] came from uint8 / 255 on every camera we know of; rounding
            # x * 255 recovers those bytes exactly, which is what a uint8 artifact then divides again.
            img = np.clip(np.rint(img.astype(np.float32) * np.float32(255)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(img)
