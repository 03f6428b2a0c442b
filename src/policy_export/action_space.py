"""The policy's normalized action space, as a per-dimension affine map of robot units.

An absolute tolerance in robot units cannot be one CI setting across robots: float32
rounding of an action near 500 pixels is ~3e-5, of one near 0.1 rad ~7e-9. LeRobot's
unnormalizer maps the network's output ``y`` to robot units ``x = y * scale + center``
per dimension, so a difference in robot units divided by ``scale`` is the difference
the network itself made. Plain numpy: the parity gate, the eval report and the
per-dimension reports (``--tolerance-std``) all read the scale from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: The modes whose range (lo, hi) maps to [-1, 1], by the stats that bound it (LeRobot's normalize_processor).
_RANGE = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}


@dataclass(frozen=True)
class ActionScale:
    """``normalized = (robot - center) / scale``, per action dimension, as LeRobot normalizes actions."""

    mode: str
    center: np.ndarray  # [A] float64
    scale: np.ndarray  # [A] float64, > 0

    @classmethod
    def from_stats(cls, mode: str, stats: Mapping[str, np.ndarray], action_dim: int, eps: float = 1e-8) -> ActionScale:
        """From the checkpoint's action statistics and normalization mode (IDENTITY: the robot's units).

        MEAN_STD: ``(x - mean) / (std + eps)``; a range mode: ``2 (x - lo) / (hi - lo) - 1``
        with a zero width replaced by ``eps``, exactly LeRobot's ``NormalizerProcessorStep``.
        """
        if mode == "MEAN_STD":
            center = np.asarray(stats["mean"], np.float64)
            scale = np.asarray(stats["std"], np.float64) + eps
        elif mode in _RANGE:
            lo_name, hi_name = _RANGE[mode]
            lo, hi = np.asarray(stats[lo_name], np.float64), np.asarray(stats[hi_name], np.float64)
            width = hi - lo
            width = np.where(width == 0, eps, width)
            center, scale = (lo + hi) / 2, width / 2
        else:
            center, scale = np.zeros(action_dim), np.ones(action_dim)
        center = np.broadcast_to(center.reshape(-1), (action_dim,)).copy()
        scale = np.broadcast_to(np.abs(scale).reshape(-1), (action_dim,)).copy()
        return cls(mode=mode, center=center, scale=scale)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Robot-unit actions ``[..., A]`` -> the policy's normalized space (float64)."""
        return (np.asarray(actions, np.float64) - self.center) / self.scale

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ActionScale:
        """Back from :meth:`to_dict` (an artifact's record); ValueError if it is not one."""
        try:
            center = np.asarray(d["center"], np.float64).reshape(-1)
            scale = np.asarray(d["scale"], np.float64).reshape(-1)
            mode = str(d["mode"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an action scale record ({exc})") from None
        if center.shape != scale.shape or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ValueError("an action scale record needs center and scale of one length, scale finite and > 0")
        return cls(mode=mode, center=center, scale=scale)
