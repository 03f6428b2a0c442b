"""Side-by-side episode videos: eager on the left, the other runner on the right (animated GIF, pillow)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from policy_export.sim.episodes import Episode

#: Frames are halved until at most this wide (side by side), to keep a 300-step GIF to a few MB.
MAX_WIDTH = 512


def _frame(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    frame = np.concatenate([left, gap, right], axis=1)
    while frame.shape[1] > MAX_WIDTH:
        frame = frame[::2, ::2]
    return frame


def side_by_side(folder: Path, eager: Episode, other: Episode, fps: float = 10.0) -> Path:
    """Write ``<folder>/ep<N>_<runner>.gif``; the shorter episode holds its last frame."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    n = max(len(eager.frames), len(other.frames))
    frames = [
        _frame(eager.frames[min(i, len(eager.frames) - 1)], other.frames[min(i, len(other.frames) - 1)])
        for i in range(n)
    ]
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", other.runner)
    path = folder / f"ep{other.episode}_{name}.gif"
    images = [Image.fromarray(f) for f in frames]
    tmp = path.with_name(f".{path.name}.partial")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path
