"""Seeded random inputs for parity checks.

Never zeros: an all-zero input hides errors in normalization offsets and biases. State
is drawn around the dataset statistics so it exercises the normalizer over its real
range; images are uniform in [0, 1] (or 0..255 frames for uint8 artifacts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policy_export.spec import DRAWN_ROLES, OBSERVATION_ROLES, PolicySpec, Role

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint


def random_inputs(
    spec: PolicySpec,
    batch: int,
    rng: np.random.Generator,
    state_center: np.ndarray | None = None,
    state_scale: np.ndarray | None = None,
    image_format: str = "float32",
    observation_only: bool = False,
) -> dict[str, np.ndarray]:
    """Named core inputs for one batch, each drawn as its declared role says.

    State around ``state_center`` / ``state_scale``, cameras uniform in [0, 1] (0..255 frames
    for uint8 artifacts), noise standard normal, language tokens uniform over the declared
    vocabulary (``dims["vocab"]``) with a full mask, RTC inputs "no guidance" (zeros).
    An observation history axis (declared in the shape) gets a fresh draw per step.
    ``observation_only``: one control step's observation instead (observation roles only,
    without the history axis), what a robot hands its policy.
    """
    center = np.zeros(spec.state_dim, np.float32) if state_center is None else state_center
    scale = np.ones(spec.state_dim, np.float32) if state_scale is None else state_scale
    sig = spec.signature
    feed: dict[str, np.ndarray] = {}
    for t in sig.inputs:
        if observation_only and t.role not in OBSERVATION_ROLES:
            continue
        shape = (batch, *(int(d) for d in sig.resolve(t)[1:]))
        if observation_only and spec.host.history is not None:
            shape = (batch, *shape[2:])  # drop the declared history axis
        if t.role is Role.STATE:
            feed[t.name] = (center + scale * rng.standard_normal(shape)).astype(np.float32)
        elif t.role is Role.CAMERA:
            if image_format == "uint8":
                *lead, c, h, w = shape
                feed[t.name] = rng.integers(0, 256, size=(*lead, h, w, c), dtype=np.uint8)
            else:
                feed[t.name] = rng.random(shape, dtype=np.float32)
        elif t.role is Role.LANG_TOKENS:
            feed[t.name] = rng.integers(0, sig.dims.get("vocab", 2), size=shape).astype(t.dtype)
        elif t.role is Role.LANG_MASK:
            feed[t.name] = np.ones(shape, dtype=t.dtype)
        elif t.role in DRAWN_ROLES:
            feed[t.name] = rng.standard_normal(shape, dtype=np.float32).astype(t.dtype, copy=False)
        else:  # RTC inputs: no guidance
            feed[t.name] = np.zeros(shape, dtype=t.dtype)
    return feed


def state_distribution(stats: dict[str, dict[str, np.ndarray]], key: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Center and spread for random states, from whatever stats the checkpoint has."""
    s = stats.get(key, {})
    if "mean" in s and "std" in s:
        return s["mean"].reshape(dim), np.maximum(s["std"].reshape(dim), 1e-3)
    if "min" in s and "max" in s:
        lo, hi = s["min"].reshape(dim), s["max"].reshape(dim)
        return (lo + hi) / 2, np.maximum((hi - lo) / 4, 1e-3)
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)


def checkpoint_inputs(
    ckpt: LoadedCheckpoint,
    batch: int,
    rng: np.random.Generator,
    image_format: str = "float32",
    observation_only: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`random_inputs` with states drawn around this checkpoint's own statistics."""
    center, scale = state_distribution(ckpt.input_stats, ckpt.spec.state_key, ckpt.spec.state_dim)
    return random_inputs(
        ckpt.spec, batch, rng, center, scale, image_format=image_format, observation_only=observation_only
    )


def to_float_images(feed: dict[str, np.ndarray], spec: PolicySpec, image_format: str) -> dict[str, np.ndarray]:
    """Convert uint8 HWC frames to LeRobot's float CHW [0, 1] the way LeRobot does."""
    if image_format != "uint8":
        return feed
    import torch

    out = dict(feed)
    for cam in spec.signature.with_role(Role.CAMERA):
        frames = torch.from_numpy(feed[cam.name])
        # lerobot.utils.control_utils.prepare_observation_for_inference: float32 / 255, HWC -> CHW
        # (movedim: frames may carry an observation-history axis after the batch)
        out[cam.name] = (frames.type(torch.float32) / 255).movedim(-1, -3).contiguous().numpy()
    return out
