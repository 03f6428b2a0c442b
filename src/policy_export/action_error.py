"""The error of each action dimension, in robot units and as a fraction of the dataset's action std.

One absolute tolerance cannot mean the same for a gripper in [0, 1] and a joint in degrees;
reduced-precision artifacts are judged per dimension against the spread the policy was
trained on (the action std in the checkpoint's statistics). Pure numpy: no runtime, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def action_std(stats: dict[str, dict[str, np.ndarray]], key: str, dim: int) -> np.ndarray:
    """The dataset's per-dimension action std (what ``--tolerance-std`` is a fraction of).

    Checkpoints normalized with MIN_MAX still carry ``std`` in LeRobot's statistics; without it,
    a quarter of the min-max range (the std of a uniform spread is 0.29 of it), then 1.
    """
    s = stats.get(key, {})
    std: np.ndarray
    if "std" in s:
        std = np.asarray(s["std"], np.float64).reshape(dim)
    elif "min" in s and "max" in s:
        std = (np.asarray(s["max"], np.float64) - np.asarray(s["min"], np.float64)).reshape(dim) / 4
    else:
        std = np.ones(dim)
    return np.maximum(std, 1e-8)


@dataclass
class DimError:
    """One action dimension over every sample, batch row and chunk step."""

    dim: int
    max_abs: float
    mean_abs: float
    #: The dataset's action std for this dimension (robot units).
    std: float
    #: ``max_abs / std``: what ``--tolerance-std`` bounds.
    max_frac_std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_dim_errors(reference: np.ndarray, candidate: np.ndarray, std: np.ndarray) -> list[DimError]:
    """Per-dimension errors of ``[..., action_dim]`` outputs (non-finite values count as infinite error)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    diff = np.where(np.isfinite(diff), diff, np.inf).reshape(-1, reference.shape[-1])
    out = []
    for d in range(diff.shape[1]):
        mx = float(diff[:, d].max()) if diff.size else 0.0
        out.append(DimError(d, mx, float(diff[:, d].mean()) if diff.size else 0.0, float(std[d]), mx / float(std[d])))
    return out


def worst_frac_std(errors: list[DimError]) -> float:
    return max((e.max_frac_std for e in errors), default=0.0)
