"""Inputs that look like a robot's: calibration for post-training quantization, and the accuracy check.

Int8 post-training quantization sets each activation's range from what the calibration
inputs produce. Uniform iid pixels (what parity checks feed) have almost all their energy at
the highest spatial frequency, where camera frames have almost none: ranges calibrated on
them are wrong for the robot. Without a dataset, the frames drawn here are smooth fields at a
few scales plus a few flat-coloured objects with sharp edges, with correlated colour
channels, matched per channel to the dataset's own image mean and std (the checkpoint's
statistics); states are drawn from the checkpoint's state statistics, and noise inputs are
standard normal as the host draws them. ``verify`` judges reduced-precision artifacts on such
frames too (the distribution they were calibrated for), beside the usual uniform draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from policy_export.spec import PolicySpec

#: ImageNet-like values, used for cameras a checkpoint leaves un-normalized (no statistics).
_DEFAULT_MEAN, _DEFAULT_STD = 0.45, 0.22


@dataclass(frozen=True)
class ImageStats:
    mean: np.ndarray  # (3,)
    std: np.ndarray  # (3,)


def _resize_bilinear(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Separable linear interpolation of a small 2-D grid to ``h`` x ``w`` (numpy only)."""
    gh, gw = grid.shape
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    cols = grid[:, x0] * (1 - fx) + grid[:, x1] * fx
    return cols[y0] * (1 - fy) + cols[y1] * fy


def synthetic_frame(rng: np.random.Generator, shape: tuple[int, int, int], stats: ImageStats) -> np.ndarray:
    """One float32 CHW frame in [0, 1]: smooth multi-scale shading, a few flat objects, real colour statistics."""
    c, h, w = shape
    lum = np.zeros((h, w))
    for cells, weight in ((3, 1.0), (8, 0.5), (24, 0.2)):
        gh, gw = max(2, round(cells * h / max(h, w)) + 1), max(2, round(cells * w / max(h, w)) + 1)
        lum += weight * _resize_bilinear(rng.standard_normal((gh, gw)), h, w)
    chroma = [_resize_bilinear(rng.standard_normal((3, 4)), h, w) for _ in range(c)]
    img = np.stack([lum + 0.35 * ch for ch in chroma])
    for _ in range(int(rng.integers(2, 6))):  # objects: flat colour, sharp edges
        oh, ow = int(rng.integers(h // 10 + 1, h // 3 + 2)), int(rng.integers(w // 10 + 1, w // 3 + 2))
        y, x = int(rng.integers(0, max(1, h - oh))), int(rng.integers(0, max(1, w - ow)))
        img[:, y : y + oh, x : x + ow] = rng.normal(0.0, 1.5, (c, 1, 1))
    img -= img.mean(axis=(1, 2), keepdims=True)
    img /= img.std(axis=(1, 2), keepdims=True) + 1e-9
    img = img * stats.std.reshape(c, 1, 1) + stats.mean.reshape(c, 1, 1)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def image_stats(stats: dict[str, dict[str, np.ndarray]], key: str, channels: int) -> ImageStats:
    s = stats.get(key, {})
    if "mean" in s and "std" in s:
        return ImageStats(
            np.asarray(s["mean"], np.float64).reshape(channels), np.asarray(s["std"], np.float64).reshape(channels)
        )
    return ImageStats(np.full(channels, _DEFAULT_MEAN), np.full(channels, _DEFAULT_STD))


def synthetic_batch(
    spec: PolicySpec,
    input_stats: dict[str, dict[str, np.ndarray]],
    batch: int,
    seed: int | list[int],
    image_format: str = "float32",
) -> dict[str, np.ndarray]:
    """``batch`` synthetic samples stacked into one feed."""
    feeds = list(synthetic_samples(spec, input_stats, batch, seed, image_format))
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


def synthetic_samples(
    spec: PolicySpec,
    input_stats: dict[str, dict[str, np.ndarray]],
    count: int,
    seed: int | list[int] = 0,
    image_format: str = "float32",
) -> Iterator[dict[str, np.ndarray]]:
    """``count`` batch-1 feeds drawn from the checkpoint's own statistics (a history repeats a
    slightly moved frame, as consecutive camera frames do)."""
    from policy_export.inputs import random_inputs, state_distribution

    rng = np.random.default_rng([*(seed if isinstance(seed, list) else [seed]), 22])
    center, scale = state_distribution(input_stats, spec.state_key, spec.state_dim)
    s = input_stats.get(spec.state_key, {})
    lo, hi = s.get("min"), s.get("max")
    steps = spec.n_obs_steps
    for _ in range(count):
        lead = (1,) if steps is None else (1, steps)
        state = center + scale * rng.standard_normal((*lead, spec.state_dim))
        if lo is not None and hi is not None:
            state = np.clip(state, lo.reshape(-1), hi.reshape(-1))
        feed = {"state": state.astype(np.float32)}
        for cam in spec.cameras:
            frame = synthetic_frame(rng, cam.shape, image_stats(input_stats, cam.key, cam.shape[0]))
            frames = [frame] if steps is None else [np.roll(frame, 2 * i, axis=2) for i in range(steps)]
            feed[cam.input_name] = to_image_format(np.stack(frames).reshape(*lead, *cam.shape), image_format)
        for noise in spec.noise_inputs:
            feed[noise.name] = rng.standard_normal((1, *noise.shape)).astype(np.float32)
        if len(feed) < len(spec.signature.inputs):
            # The other declared roles (a VLA's language tokens and mask, its RTC inputs) as
            # verify draws them: tokens over the vocabulary with a full mask, no RTC guidance.
            rest = random_inputs(spec, 1, rng, image_format=image_format)
            feed.update({k: v for k, v in rest.items() if k not in feed})
        yield feed


def to_image_format(chw: np.ndarray, image_format: str) -> np.ndarray:
    """Float CHW [0, 1] frames in the artifact's image format (uint8 artifacts take HWC 0..255)."""
    if image_format != "uint8":
        return chw.astype(np.float32)
    return np.clip(np.rint(np.moveaxis(chw, -3, -1) * 255.0), 0, 255).astype(np.uint8)
