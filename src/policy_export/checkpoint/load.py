"""Load a LeRobot ``pretrained_model`` directory offline and describe its interface.

The directory is loaded through LeRobot's public API, the same calls LeRobot's own
eval/rollout code makes, so what we export is what the user trained. Everything that can
be checked cheaply is checked *before* handing the files to LeRobot, so that a bad
checkpoint produces one line naming the file instead of a deep traceback.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.action_space import ActionScale
from policy_export.checkpoint.diagnose import _shape_mismatch
from policy_export.checkpoint.files import _check_files
from policy_export.checkpoint.keys import ACTION_KEY, ENV_STATE_KEY, STATE_KEY
from policy_export.checkpoint.normalization import _find_step, _mode_for, _stats_as_numpy, _validate_stats, norm_hash
from policy_export.declarations import apply_declared, declaration_for
from policy_export.errors import BadInputError, first_line
from policy_export.spec import CameraSpec, PolicySpec, camera_input_names


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

    @property
    def action_scale(self) -> ActionScale:
        """The policy's normalized action space (per-dimension scale from the action statistics)."""
        spec = self.spec
        mode = spec.normalization.get(spec.action_key, "IDENTITY")
        return ActionScale.from_stats(mode, self.output_stats.get(spec.action_key, {}), spec.action_dim, self.eps)


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
        # LeRobot prints "Loading weights..." to stdout; a family may need a context to build in.
        with contextlib.redirect_stdout(io.StringIO()), declaration_for(cfg.type).building(root):
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
    declaration = declaration_for(cfg.type)
    common = PolicySpec(
        policy_type=cfg.type,
        state_key=STATE_KEY,
        state_dim=int(cfg.robot_state_feature.shape[0]),
        action_key=ACTION_KEY,
        action_dim=int(action_feat.shape[0]),
        cameras=cameras,
        chunk_size=1,  # the family's: declared below
        n_action_steps=1,
        normalization=modes,
        norm_hash=norm_hash(modes, input_stats, output_stats),
    )
    spec = apply_declared(common, declaration.declare(cfg, common, root / "config.json"))
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
