"""Build real LeRobot checkpoints locally (ACT and Diffusion Policy; random weights, plausible statistics).

There is no model hub here, so the demo and the tests make their own checkpoints with
LeRobot's public API and save them exactly as training does. The saved ``config.json``
names the ImageNet backbone weights like a trained checkpoint's does, which exercises the
offline-loading path users hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.fsutil import atomic_directory

TRAINED_BACKBONE_WEIGHTS = "ResNet18_Weights.IMAGENET1K_V1"


@dataclass(frozen=True)
class CheckpointRecipe:
    """What kind of ACT checkpoint to build. Defaults are the demo policy."""

    cameras: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"top": (3, 480, 640)})
    state_dim: int = 8
    action_dim: int = 8
    chunk_size: int = 100
    n_action_steps: int = 100
    temporal_ensemble_coeff: float | None = None
    normalization: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    dim_model: int = 512
    dim_feedforward: int = 3200
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1
    #: Any other ``ACTConfig`` field a user's training run may have changed
    #: (``pre_norm``, ``use_vae``, ``replace_final_stride_with_dilation``, ``n_heads``, ...).
    config_overrides: dict[str, object] = field(default_factory=dict)
    seed: int = 0
    #: Robot-unit range of state and action (pusht: pixels, 0-512); None: joint angles in radians.
    value_range: tuple[float, float] | None = None


def camera_key(name: str) -> str:
    """A recipe's camera name as LeRobot's feature key: a full key (``observation.image``, as LeRobot's
    pusht policies have, with no camera suffix) is kept, a bare name becomes ``observation.images.<name>``."""
    return name if name.startswith("observation.") else f"observation.images.{name}"


def _ranged_stats(rng: np.random.Generator, dim: int, lo: float, hi: float) -> dict[str, np.ndarray]:
    """Statistics of a value that lives in [lo, hi] (pusht's pixels): the data spans most of the range."""
    span = hi - lo
    vmin = (lo + rng.uniform(0.0, 0.05, dim) * span).astype(np.float32)
    vmax = (hi - rng.uniform(0.0, 0.05, dim) * span).astype(np.float32)
    mean = ((vmin + vmax) / 2 + rng.normal(0.0, 0.02, dim) * span).astype(np.float32)
    std = (rng.uniform(0.15, 0.25, dim) * span).astype(np.float32)
    return {"mean": mean, "std": std, "min": vmin, "max": vmax, "count": np.array([5000])}


def _plausible_stats(rng: np.random.Generator, dim: int) -> dict[str, np.ndarray]:
    mean = rng.normal(0.0, 0.6, dim).astype(np.float32)  # joint positions in radians
    std = rng.uniform(0.05, 0.5, dim).astype(np.float32)
    lo = (mean - 2.5 * std).astype(np.float32)
    hi = (mean + 2.5 * std).astype(np.float32)
    return {"mean": mean, "std": std, "min": lo, "max": hi, "count": np.array([5000])}


def _image_stats(rng: np.random.Generator) -> dict[str, np.ndarray]:
    mean = (np.array([0.485, 0.456, 0.406]) + rng.uniform(-0.05, 0.05, 3)).astype(np.float32).reshape(3, 1, 1)
    std = (np.array([0.229, 0.224, 0.225]) + rng.uniform(-0.02, 0.02, 3)).astype(np.float32).reshape(3, 1, 1)
    return {
        "mean": mean,
        "std": std,
        "min": np.zeros((3, 1, 1), np.float32),
        "max": np.ones((3, 1, 1), np.float32),
        "count": np.array([5000]),
    }


#: A small ACT (one 96x128 camera, chunk 20, dim 128): the test suite's workhorse and the fleet
#: benchmark's "small" policy, where per-request overhead matters next to its compute.
SMALL_RECIPE = CheckpointRecipe(
    cameras={"top": (3, 96, 128)},
    state_dim=6,
    action_dim=5,
    chunk_size=20,
    n_action_steps=10,
    dim_model=128,
    dim_feedforward=256,
    n_encoder_layers=2,
    seed=1,
)


def _features(recipe: CheckpointRecipe | DiffusionRecipe) -> tuple[dict[str, Any], dict[str, Any]]:
    """LeRobot's input/output features for a recipe: one state, one camera per entry, one action."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(recipe.state_dim,))}
    for name, shape in recipe.cameras.items():
        inputs[camera_key(name)] = PolicyFeature(type=FeatureType.VISUAL, shape=tuple(shape))
    return inputs, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(recipe.action_dim,))}


def _perturb_batch_norm(modules: list[Any], rng: np.random.Generator) -> None:
    """Random init leaves batch norm as the identity; give it trained-looking statistics so the
    exporters must really carry the batch-norm math (and parity tests would see it if they did not)."""
    import torch

    with torch.no_grad():
        for module in modules:
            n = module.weight.shape[0]
            module.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, n).astype(np.float32)))
            module.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, n).astype(np.float32)))
            module.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n).astype(np.float32)))


def _dataset_stats(rng: np.random.Generator, recipe: CheckpointRecipe | DiffusionRecipe) -> dict[str, Any]:
    if recipe.value_range is None:
        stats = {
            "observation.state": _plausible_stats(rng, recipe.state_dim),
            "action": _plausible_stats(rng, recipe.action_dim),
        }
    else:
        lo, hi = recipe.value_range
        stats = {
            "observation.state": _ranged_stats(rng, recipe.state_dim, lo, hi),
            "action": _ranged_stats(rng, recipe.action_dim, lo, hi),
        }
    for name in recipe.cameras:
        stats[camera_key(name)] = _image_stats(rng)
    return stats


def _save(out: Path, policy: Any, pre: Any, post: Any) -> Path:
    """Written aside and swapped in whole: an interrupted build must not leave a folder that
    `policy-export demo` (which reuses an existing checkpoint) would take for a checkpoint."""
    import json

    with atomic_directory(out) as tmp:
        policy.save_pretrained(tmp)
        pre.save_pretrained(tmp)
        post.save_pretrained(tmp)
        # As a trained checkpoint's config does: name the backbone weights training started from.
        cfg_path = tmp / "config.json"
        saved = json.loads(cfg_path.read_text())
        saved["pretrained_backbone_weights"] = TRAINED_BACKBONE_WEIGHTS
        cfg_path.write_text(json.dumps(saved, indent=4))
    return out


def build_checkpoint(out_dir: str | Path, recipe: CheckpointRecipe | None = None) -> Path:
    """Write a LeRobot ``pretrained_model`` directory and return its path."""

    import torch
    from lerobot.configs.types import NormalizationMode
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    recipe = recipe or CheckpointRecipe()
    out = Path(out_dir)
    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)

    input_features, output_features = _features(recipe)
    cfg = ACTConfig(
        input_features=input_features,
        output_features=output_features,
        chunk_size=recipe.chunk_size,
        n_action_steps=recipe.n_action_steps,
        temporal_ensemble_coeff=recipe.temporal_ensemble_coeff,
        normalization_mapping={k: NormalizationMode(v) for k, v in recipe.normalization.items()},
        dim_model=recipe.dim_model,
        dim_feedforward=recipe.dim_feedforward,
        n_encoder_layers=recipe.n_encoder_layers,
        n_decoder_layers=recipe.n_decoder_layers,
        pretrained_backbone_weights=None,
        device="cpu",
        **recipe.config_overrides,
    )
    policy = ACTPolicy(cfg)
    # Random init leaves FrozenBatchNorm2d as the identity; give it trained-looking
    # statistics so exporters must really carry the batch-norm math.
    _perturb_batch_norm([m for m in policy.model.backbone.modules() if type(m).__name__ == "FrozenBatchNorm2d"], rng)

    stats = _dataset_stats(rng, recipe)
    pre, post = make_act_pre_post_processors(cfg, dataset_stats=stats)

    # Written aside and swapped in whole: an interrupted build must not leave a folder that
    # `policy-export demo` (which reuses an existing checkpoint) would take for a checkpoint.
    return _save(out, policy, pre, post)


@dataclass(frozen=True)
class DiffusionRecipe:
    """What kind of Diffusion Policy checkpoint to build. Defaults are LeRobot's ``DiffusionConfig``
    defaults (down_dims 512/1024/2048, DDPM with 100 steps) on 96x96 images cropped to 84x84."""

    cameras: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {"top": (3, 96, 96)})
    state_dim: int = 2
    action_dim: int = 2
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    crop_shape: tuple[int, int] | None = (84, 84)
    normalization: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    )
    #: Any other ``DiffusionConfig`` field (``down_dims``, ``noise_scheduler_type``, ``num_inference_steps``, ...).
    config_overrides: dict[str, object] = field(default_factory=dict)
    seed: int = 0
    #: As :attr:`CheckpointRecipe.value_range`.
    value_range: tuple[float, float] | None = None


#: The ``policy-export demo --family diffusion`` policy: PushT-like (one 96x96 camera cropped to 84x84, 2-dim
#: state and action, 2 observation steps), a small U-Net and 10 DDIM steps, so the demo takes seconds where
#: LeRobot's default (``DiffusionRecipe()``: 1 GB, 100 DDPM steps) exports in minutes.
SMALL_DIFFUSION_RECIPE = DiffusionRecipe(
    config_overrides={
        "down_dims": (64, 128, 256),
        "diffusion_step_embed_dim": 64,
        "noise_scheduler_type": "DDIM",
        "num_inference_steps": 10,
    },
    seed=4,
)


def build_diffusion_checkpoint(out_dir: str | Path, recipe: DiffusionRecipe | None = None) -> Path:
    """Write a LeRobot Diffusion Policy ``pretrained_model`` directory and return its path."""

    import torch
    from lerobot.configs.types import NormalizationMode
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors

    recipe = recipe or DiffusionRecipe()
    out = Path(out_dir)
    rng = np.random.default_rng(recipe.seed)
    torch.manual_seed(recipe.seed)
    input_features, output_features = _features(recipe)
    cfg = DiffusionConfig(
        input_features=input_features,
        output_features=output_features,
        n_obs_steps=recipe.n_obs_steps,
        horizon=recipe.horizon,
        n_action_steps=recipe.n_action_steps,
        crop_shape=recipe.crop_shape,
        normalization_mapping={k: NormalizationMode(v) for k, v in recipe.normalization.items()},
        pretrained_backbone_weights=None,
        device="cpu",
        **recipe.config_overrides,
    )
    policy = DiffusionPolicy(cfg)
    # Random init leaves batch norm as the identity; give it trained-looking statistics.
    _perturb_batch_norm([m for m in policy.diffusion.modules() if isinstance(m, torch.nn.BatchNorm2d)], rng)
    stats = _dataset_stats(rng, recipe)
    pre, post = make_diffusion_pre_post_processors(cfg, dataset_stats=stats)
    return _save(out, policy, pre, post)


# Checkpoints shaped like LeRobot's simulator policies (feature names, shapes, units and normalization of
# lerobot/act_* and lerobot/diffusion_pusht), small enough to run closed-loop episodes on a CPU (random weights).
#: PushT: ``observation.state`` = agent_pos (2, pixels), ``observation.image`` 96x96 (no camera suffix),
#: action = target position in pixels (0-512).
PUSHT_ACT = CheckpointRecipe(
    cameras={"observation.image": (3, 96, 96)},
    state_dim=2,
    action_dim=2,
    chunk_size=20,
    n_action_steps=10,
    dim_model=128,
    dim_feedforward=256,
    n_encoder_layers=2,
    seed=11,
    value_range=(0.0, 512.0),
)
PUSHT_DIFFUSION = DiffusionRecipe(
    cameras={"observation.image": (3, 96, 96)},
    horizon=16,
    n_action_steps=8,
    crop_shape=(84, 84),
    config_overrides={
        "down_dims": (32, 64),
        "diffusion_step_embed_dim": 32,
        "noise_scheduler_type": "DDPM",  # LeRobot's diffusion_pusht: the per-step draws are replayed too
        "num_inference_steps": 10,
    },
    seed=12,
    value_range=(0.0, 512.0),
)
#: ALOHA (sim insertion / transfer cube): 14 joint positions, one 480x640 camera ``top``, 14-d actions.
ALOHA_ACT = CheckpointRecipe(
    cameras={"top": (3, 480, 640)},
    state_dim=14,
    action_dim=14,
    chunk_size=20,
    n_action_steps=10,
    dim_model=128,
    dim_feedforward=256,
    n_encoder_layers=2,
    seed=13,
)
ALOHA_DIFFUSION = DiffusionRecipe(
    cameras={"top": (3, 480, 640)},
    state_dim=14,
    action_dim=14,
    horizon=16,
    n_action_steps=8,
    crop_shape=(440, 560),
    config_overrides={
        "down_dims": (32, 64),
        "diffusion_step_embed_dim": 32,
        "noise_scheduler_type": "DDIM",
        "num_inference_steps": 5,
    },
    seed=14,
)
#: ``policy-export demo --env NAME`` and the eval tests: family -> recipe, per environment.
ENV_RECIPES: dict[str, dict[str, CheckpointRecipe | DiffusionRecipe]] = {
    "pusht": {"act": PUSHT_ACT, "diffusion": PUSHT_DIFFUSION},
    "aloha": {"act": ALOHA_ACT, "diffusion": ALOHA_DIFFUSION},
}


def build_env_checkpoint(out_dir: str | Path, env: str, family: str) -> Path:
    """A checkpoint whose features match LeRobot's ``env`` (pusht, aloha) for ``family`` (act, diffusion)."""
    recipe = ENV_RECIPES[env][family]
    if isinstance(recipe, DiffusionRecipe):
        return build_diffusion_checkpoint(out_dir, recipe)
    return build_checkpoint(out_dir, recipe)


def rtc_config(rtc: dict[str, Any] | None) -> Any:
    """LeRobot's RTCConfig from a recipe's plain dict (shared by the VLA demo builders)."""
    if rtc is None:
        return None
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    return RTCConfig(
        enabled=True,
        execution_horizon=int(rtc["execution_horizon"]),
        max_guidance_weight=float(rtc["max_guidance_weight"]),
        prefix_attention_schedule=RTCAttentionSchedule(rtc["prefix_attention_schedule"]),
    )
