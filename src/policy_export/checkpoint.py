"""Load a LeRobot ``pretrained_model`` directory offline and describe its interface.

The directory is loaded through LeRobot's public API, the same calls LeRobot's own
eval/rollout code makes, so what we export is what the user trained. Everything that can
be checked cheaply is checked *before* handing the files to LeRobot, so that a bad
checkpoint produces one line naming the file instead of a deep traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.errors import BadInputError, first_line
from policy_export.families import family_for
from policy_export.spec import CameraSpec, PolicySpec, camera_input_names
from policy_export_wrappers.normalization import MODE_STATS, RANGE_STATS

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
ACTION_KEY = "action"


@dataclass
class LoadedCheckpoint:
    """A loaded policy plus the pieces the exporters and verifiers need."""

    path: Path
    policy: Any  # lerobot PreTrainedPolicy (kept untyped so this module imports without lerobot)
    preprocessor: Any
    postprocessor: Any
    spec: PolicySpec
    #: feature key -> stat name -> float32 array, as used by the normalizer / unnormalizer.
    input_stats: dict[str, dict[str, np.ndarray]]
    output_stats: dict[str, dict[str, np.ndarray]]
    eps: float


def unreadable(path: Path, exc: OSError) -> BadInputError:
    """The one line for a checkpoint file that cannot be opened: what is wrong and how to fix it.

    Told apart from a corrupt file on purpose: "re-copy it" does nothing for a permission problem.
    """
    if isinstance(exc, PermissionError):
        try:
            st = path.stat()
            whose = f"owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"
        except OSError:
            whose = "its folder is not searchable"
        return BadInputError(
            f"{path}: permission denied ({whose}; this process runs as uid {os.geteuid()}); "
            f"make it readable, e.g. chmod a+r {path} (and a+x on its folders), or run as its owner"
        )
    if isinstance(exc, IsADirectoryError):
        return BadInputError(f"{path}: is a folder, not a file; copy the checkpoint's file there")
    return BadInputError(f"{path}: cannot be read ({exc.strerror or exc}); check the disk and copy it again")


def _open_check(path: Path) -> None:
    """Open ``path`` as the loaders will, so an OSError is classified here and not blamed on the content."""
    try:
        with open(path, "rb") as f:
            f.read(8)
    except OSError as exc:
        raise unreadable(path, exc) from exc


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise unreadable(path, exc) from exc
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}); re-save the checkpoint"
        ) from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: {what} must hold a JSON object; re-save the checkpoint")
    return data


def _check_files(root: Path) -> None:
    """Fail fast, with the file name, on anything LeRobot would choke on obscurely."""
    if not root.exists():
        raise BadInputError(
            f"{root}: checkpoint directory does not exist; pass the 'pretrained_model' folder written by training"
        )
    if not root.is_dir():
        raise BadInputError(f"{root}: --checkpoint must be a directory (the 'pretrained_model' folder), not a file")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        hint = " (did you mean its 'pretrained_model' subfolder?)" if (root / "pretrained_model").is_dir() else ""
        raise BadInputError(f"{cfg_path}: missing; this is not a LeRobot pretrained_model directory{hint}")
    cfg = _read_json(cfg_path, "policy config")
    family_for(cfg.get("type"), where=str(cfg_path)).check_config(cfg, cfg_path)
    weights = root / "model.safetensors"
    if weights.is_dir():
        raise unreadable(weights, IsADirectoryError(21, "Is a directory"))
    if not weights.is_file():
        raise BadInputError(f"{weights}: missing; the checkpoint is partial, copy the whole pretrained_model folder")
    _check_safetensors(weights)
    for role in ("preprocessor", "postprocessor"):
        jpath = root / f"policy_{role}.json"
        if not jpath.is_file():
            raise BadInputError(
                f"{jpath}: missing; checkpoints from LeRobot >= 0.4 carry their {role}. "
                "Migrate older checkpoints with lerobot's migrate_policy_normalization script"
            )
        steps = _read_json(jpath, f"{role} pipeline").get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
            raise BadInputError(f"{jpath}: 'steps' must be a list of step objects; re-save the checkpoint")
        for step in steps:
            state_file = step.get("state_file")
            if state_file:
                spath = root / state_file
                if not spath.is_file():
                    raise BadInputError(f"{spath}: missing (named by {jpath.name}); the checkpoint is partial")
                _check_safetensors(spath)


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    _open_check(path)
    try:
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as exc:  # safetensors raises several unrelated types for a damaged file
        raise BadInputError(f"{path}: corrupted safetensors file ({exc}); re-copy it from the training run") from exc


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


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load a checkpoint offline, validated, on CPU."""
    root = Path(path).expanduser()
    _check_files(root)

    # Imported here: lerobot pulls in torch and takes seconds to import.
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    try:
        cfg = PreTrainedConfig.from_pretrained(str(root))
    except Exception as exc:
        raise BadInputError(f"{root / 'config.json'}: LeRobot cannot parse this policy config ({exc})") from exc
    # A trained checkpoint names the ImageNet backbone weights it started from; the trained
    # weights are in model.safetensors, so never let the constructor reach for the network.
    cfg.pretrained_backbone_weights = None
    cfg.device = "cpu"
    if getattr(cfg, "env_state_feature", None) is not None:
        raise BadInputError(
            f"{root / 'config.json'}: '{ENV_STATE_KEY}' inputs are not supported yet; export a policy without it"
        )
    if getattr(cfg, "robot_state_feature", None) is None:
        raise BadInputError(f"{root / 'config.json'}: the policy has no '{STATE_KEY}' input; policy-export needs one")
    if not cfg.image_features:
        raise BadInputError(
            f"{root / 'config.json'}: the policy has no camera inputs; policy-export needs at least one"
        )

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # LeRobot prints "Loading weights..." to stdout
            policy = get_policy_class(cfg.type).from_pretrained(str(root), config=cfg)
        policy.eval()
        pre, post = make_pre_post_processors(
            policy.config,
            pretrained_path=str(root),
            preprocessor_overrides={"device_processor": {"device": "cpu"}},
            postprocessor_overrides={"device_processor": {"device": "cpu"}},
        )
    except BadInputError:
        raise
    except Exception as exc:
        mismatch = _shape_mismatch(root, cfg)
        if mismatch:
            raise BadInputError(mismatch) from exc
        raise BadInputError(f"{root}: LeRobot failed to load this checkpoint ({first_line(exc)})") from exc

    normalizer = _find_step(pre, "NormalizerProcessorStep")
    unnormalizer = _find_step(post, "UnnormalizerProcessorStep")
    input_stats = _stats_as_numpy(normalizer) if normalizer is not None else {}
    output_stats = _stats_as_numpy(unnormalizer) if unnormalizer is not None else {}

    features = {STATE_KEY: cfg.robot_state_feature, **cfg.image_features}
    modes: dict[str, str] = {}
    for key, feat in features.items():
        modes[key] = _mode_for(normalizer, key, feat.type)
        if modes[key] != "IDENTITY":
            _validate_stats(root / "policy_preprocessor.json", key, modes[key], input_stats[key], tuple(feat.shape))
    action_feat = cfg.action_feature
    modes[ACTION_KEY] = _mode_for(unnormalizer, ACTION_KEY, action_feat.type)
    if modes[ACTION_KEY] != "IDENTITY":
        _validate_stats(
            root / "policy_postprocessor.json",
            ACTION_KEY,
            modes[ACTION_KEY],
            output_stats[ACTION_KEY],
            tuple(action_feat.shape),
        )

    cam_keys = list(cfg.image_features)
    input_names = camera_input_names(cam_keys)
    if len(set(input_names)) != len(input_names):
        raise BadInputError(
            f"{root / 'config.json'}: cameras {cam_keys} end in the same name, so their inputs would collide; "
            "rename the cameras so the last part of each key differs"
        )
    cameras = tuple(
        CameraSpec(key=k, input_name=n, shape=tuple(int(d) for d in cfg.image_features[k].shape))  # type: ignore[arg-type]
        for k, n in zip(cam_keys, input_names, strict=True)
    )
    fields = family_for(cfg.type).spec_fields(cfg, root / "config.json")
    spec = PolicySpec(
        policy_type=cfg.type,
        state_key=STATE_KEY,
        state_dim=int(cfg.robot_state_feature.shape[0]),
        action_key=ACTION_KEY,
        action_dim=int(action_feat.shape[0]),
        cameras=cameras,
        chunk_size=fields.chunk_size,
        n_action_steps=fields.n_action_steps,
        normalization=modes,
        norm_hash=norm_hash(modes, input_stats, output_stats),
        n_obs_steps=fields.n_obs_steps,
        noise_inputs=fields.noise_inputs,
        family=fields.family,
    )
    eps = float(getattr(normalizer, "eps", 1e-8)) if normalizer is not None else 1e-8
    return LoadedCheckpoint(
        path=root,
        policy=policy,
        preprocessor=pre,
        postprocessor=post,
        spec=spec,
        input_stats=input_stats,
        output_stats=output_stats,
        eps=eps,
    )
