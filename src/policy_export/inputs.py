"""Seeded random inputs for parity checks.

Never zeros: an all-zero input hides errors in normalization offsets and biases. State
is drawn around the dataset statistics so it exercises the normalizer over its real
range; images are uniform in [0, 1] (or 0..255 frames for uint8 artifacts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policy_export.spec import PolicySpec

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint


def random_inputs(
    spec: PolicySpec,
    batch: int,
    rng: np.random.Generator,
    state_center: np.ndarray | None = None,
    state_scale: np.ndarray | None = None,
    image_format: str = "float32",
) -> dict[str, np.ndarray]:
    """Named core inputs (``state``, ``image``/``image_<cam>``) for one batch."""
    center = np.zeros(spec.state_dim, np.float32) if state_center is None else state_center
    scale = np.ones(spec.state_dim, np.float32) if state_scale is None else state_scale
    feed = {"state": (center + scale * rng.standard_normal((batch, spec.state_dim))).astype(np.float32)}
    for cam in spec.cameras:
        c, h, w = cam.shape
        if image_format == "uint8":
            feed[cam.input_name] = rng.integers(0, 256, size=(batch, h, w, c), dtype=np.uint8)
        else:
            feed[cam.input_name] = rng.random((batch, c, h, w), dtype=np.float32)
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
    ckpt: LoadedCheckpoint, batch: int, rng: np.random.Generator, image_format: str = "float32"
) -> dict[str, np.ndarray]:
    """:func:`random_inputs` with states drawn around this checkpoint's own statistics."""
    center, scale = state_distribution(ckpt.input_stats, ckpt.spec.state_key, ckpt.spec.state_dim)
    return random_inputs(ckpt.spec, batch, rng, center, scale, image_format=image_format)


def to_float_images(feed: dict[str, np.ndarray], spec: PolicySpec, image_format: str) -> dict[str, np.ndarray]:
    """Convert uint8 HWC frames to LeRobot's float CHW [0, 1] the way LeRobot does."""
    if image_format != "uint8":
        return feed
    import torch

    out = dict(feed)
    for cam in spec.cameras:
        frames = torch.from_numpy(feed[cam.input_name])
        # lerobot.utils.control_utils.prepare_observation_for_inference: float32 / 255, HWC -> CHW
        out[cam.input_name] = (frames.type(torch.float32) / 255).permute(0, 3, 1, 2).contiguous().numpy()
    return out
