"""The one-line diagnosis of a ``config.json`` that disagrees with its ``model.safetensors``
(torch says it in three lines of parameter names): which feature, its size in the config and
in the weights, and the fix.

Apart from the loader because it runs only after LeRobot has failed, and knows per policy
type which weight a config field decides.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from policy_export.checkpoint.keys import ACTION_KEY, ENV_STATE_KEY, STATE_KEY

# Weights whose shape a config.json field decides: (policy type, weight) -> (field, axis of that size).
_SHAPE_FIELDS = {
    "act": {
        "model.encoder_robot_state_input_proj.weight": (STATE_KEY, 1),
        "model.vae_encoder_robot_state_input_proj.weight": (STATE_KEY, 1),
        "model.encoder_env_state_input_proj.weight": (ENV_STATE_KEY, 1),
        "model.action_head.weight": (ACTION_KEY, 0),
        "model.action_head.bias": (ACTION_KEY, 0),
        "model.vae_encoder_action_input_proj.weight": (ACTION_KEY, 1),
        "model.decoder_pos_embed.weight": ("chunk_size", 0),
    }
}


def _config_value(cfg: Any, field: str) -> list[int] | int | None:
    if field == "chunk_size":
        return getattr(cfg, "chunk_size", None)
    feats = {**(getattr(cfg, "input_features", None) or {}), **(getattr(cfg, "output_features", None) or {})}
    return list(feats[field].shape) if field in feats else None


def _shape_mismatch(root: Path, cfg: Any) -> str | None:
    """One line for a config.json that disagrees with its weights (torch says it in three lines of
    parameter names): the feature, its size in the config and in the weights, and the fix."""
    from lerobot.policies.factory import get_policy_class
    from safetensors import safe_open

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            expected = {k: tuple(v.shape) for k, v in get_policy_class(cfg.type)(cfg).state_dict().items()}
        with safe_open(str(root / "model.safetensors"), framework="np") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception:
        return None
    bad = {k: (stored[k], expected[k]) for k in stored if k in expected and stored[k] != expected[k]}
    if not bad:
        return None
    known = _SHAPE_FIELDS.get(cfg.type, {})
    cfg_path = root / "config.json"
    for key, (field, axis) in known.items():
        if key not in bad:
            continue
        got, want = bad[key]
        trained = got[axis]
        value = _config_value(cfg, field)
        if field == "chunk_size":
            return (
                f"{cfg_path}: chunk_size is {value}, but model.safetensors was trained with {trained} "
                f"({key} is {list(got)}, the config builds {list(want)}); set chunk_size to {trained} "
                "or use the config.json saved with these weights"
            )
        weights_shape = [trained, *(value[1:] if isinstance(value, list) else [])]
        return (
            f"{cfg_path}: feature '{field}' has shape {value}, but model.safetensors was trained with "
            f"{weights_shape} ({key} is {list(got)}, the config builds {list(want)}); set its shape to "
            f"{weights_shape} or use the config.json saved with these weights"
        )
    key, (got, want) = next(iter(sorted(bad.items())))
    return (
        f"{cfg_path}: does not match model.safetensors ({len(bad)} weight(s) differ, e.g. {key} is {list(got)}, "
        f"the config builds {list(want)}); use the config.json saved with these weights"
    )
