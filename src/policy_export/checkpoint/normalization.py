"""The normalization a checkpoint bakes in: its statistics read out of LeRobot's processor
steps, the mode of each feature, the checks that no statistic would divide by ~0 or hold
NaN, and the fingerprint (:func:`norm_hash`) an artifact carries so that a runtime can tell
two normalizations apart.

Apart from the loader because this is arithmetic on arrays: it runs on what LeRobot loaded
and is the one home of the normalization fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export_wrappers.normalization import MODE_STATS, RANGE_STATS


def _find_step(pipeline: Any, class_name: str) -> Any:
    for step in getattr(pipeline, "steps", []):
        if type(step).__name__ == class_name:
            return step
    return None


def _stats_as_numpy(step: Any) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, stats in (getattr(step, "stats", None) or {}).items():
        out[key] = {}
        for name, value in stats.items():
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            out[key][name] = np.asarray(value, dtype=np.float32)
    return out


def _mode_for(step: Any, key: str, feature_type: Any) -> str:
    if step is None:
        return "IDENTITY"
    mode = step.norm_map.get(feature_type)
    name = getattr(mode, "value", "IDENTITY") if mode is not None else "IDENTITY"
    if name != "IDENTITY" and key not in (step.stats or {}):
        return "IDENTITY"  # LeRobot passes features without stats through unchanged
    return name


def _validate_stats(path: Path, key: str, mode: str, stats: dict[str, np.ndarray], shape: tuple[int, ...]) -> None:
    needed = MODE_STATS.get(mode, ())
    for name in needed:
        if name not in stats:
            raise BadInputError(
                f"{path}: {mode} normalization of '{key}' needs stat '{name}', which is missing; recompute the dataset stats"
            )
        arr = stats[name]
        if not np.all(np.isfinite(arr)):
            where = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise BadInputError(
                f"{path}: stat '{key}.{name}' holds NaN/inf at index {where}; recompute the dataset stats"
            )
        try:
            np.broadcast_to(arr, shape)
        except ValueError:
            raise BadInputError(
                f"{path}: stat '{key}.{name}' has shape {list(arr.shape)}, which does not fit feature shape {list(shape)}"
            ) from None
    if mode == "MEAN_STD":
        bad = np.argwhere(np.broadcast_to(stats["std"], shape) <= 0)
        if bad.size:
            raise BadInputError(
                f"{path}: stat '{key}.std' is <= 0 at index {bad[0].tolist()}, so normalization divides by ~1e-8; "
                "recompute the dataset stats or drop that dimension"
            )
    elif mode in RANGE_STATS:
        lo, hi = RANGE_STATS[mode]
        bad = np.argwhere(np.broadcast_to(stats[hi] - stats[lo], shape) <= 0)
        if bad.size:
            raise BadInputError(
                f"{path}: stats '{key}.{hi}' <= '{key}.{lo}' at index {bad[0].tolist()}, so {mode} normalization divides by ~1e-8; "
                "recompute the dataset stats"
            )


def norm_hash(
    modes: dict[str, str], input_stats: dict[str, dict[str, np.ndarray]], output_stats: dict[str, dict[str, np.ndarray]]
) -> str:
    """Short, order-independent fingerprint of the normalization an artifact bakes in."""
    h = hashlib.sha256()
    for role, stats in (("in", input_stats), ("out", output_stats)):
        for key in sorted(stats):
            if modes.get(key, "IDENTITY") == "IDENTITY":
                continue
            h.update(f"{role}:{key}:{modes[key]}".encode())
            for name in sorted(stats[key]):
                arr = np.ascontiguousarray(stats[key][name], dtype=np.float32)
                h.update(f"{name}{list(arr.shape)}".encode())
                h.update(arr.tobytes())
    return h.hexdigest()[:12]
