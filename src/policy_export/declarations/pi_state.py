"""pi0.5's state normalization for the host's prompt, read from the saved preprocessor (numpy only).

pi0.5 writes the state into its prompt after LeRobot's ``NormalizerProcessorStep`` has mapped it
to [-1, 1]: the robot's host must apply the same map before discretizing. Its statistics are in
the preprocessor's normalizer safetensors (``"<key>.<stat>"``); the map is written into the
artifact's host settings as ``offset``/``scale`` so the robot needs no LeRobot to apply it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import BadInputError

#: Normalization mode -> (offset stat, high stat) of LeRobot's range maps ``2 (x - lo) / (hi - lo) - 1``.
_RANGES = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}


def state_normalization(root: Path, key: str, dim: int) -> dict[str, Any]:
    """``{"mode", "offset", "scale"}`` of the state as the preprocessor normalizes it (float32 values)."""
    path = root / "policy_preprocessor.json"
    steps = json.loads(path.read_text())["steps"]
    for i, step in enumerate(steps):
        if step.get("registry_name") != "normalizer_processor":
            continue
        config = step.get("config") or {}
        feature_type = ((config.get("features") or {}).get(key) or {}).get("type", "STATE")
        mode = str((config.get("norm_map") or {}).get(feature_type, "IDENTITY"))
        eps = np.float32(config.get("eps", 1e-8))
        if mode == "IDENTITY":
            return {"mode": mode, "offset": [0.0] * dim, "scale": [1.0] * dim}
        from safetensors.numpy import load_file

        stats_file = root / (step.get("state_file") or f"policy_preprocessor_step_{i}_normalizer_processor.safetensors")
        return _affine(load_file(str(stats_file)), stats_file, key, mode, eps)
    return {"mode": "IDENTITY", "offset": [0.0] * dim, "scale": [1.0] * dim}


def _affine(stats: dict[str, np.ndarray], where: Path, key: str, mode: str, eps: np.float32) -> dict[str, Any]:
    """LeRobot's normalization of ``key`` as ``(x - offset) / scale`` (MEAN_STD) or ``2 (x - offset) / scale - 1``."""

    def stat(name: str) -> np.ndarray:
        full = f"{key}.{name}"
        if full not in stats:
            raise BadInputError(f"{where}: no {full!r}; the state's {mode} normalization needs it")
        return np.asarray(stats[full], np.float32).reshape(-1)

    if mode == "MEAN_STD":
        offset, scale = stat("mean"), (stat("std") + eps).astype(np.float32)
    elif mode in _RANGES:
        lo, hi = _RANGES[mode]
        offset = stat(lo)
        denom = stat(hi) - offset
        scale = np.where(denom == 0, eps, denom).astype(np.float32)
    else:
        raise BadInputError(f"{where}: state normalization {mode!r} is not supported for pi0.5's prompt")
    return {"mode": mode, "offset": [float(v) for v in offset], "scale": [float(v) for v in scale]}
