"""Build the stateless core (``policy_export_wrappers``) from a loaded checkpoint."""

from __future__ import annotations

from typing import Any

from policy_export.checkpoint import ACTION_KEY, LoadedCheckpoint


def example_args(ckpt: LoadedCheckpoint, batch: int, image_format: str, seed: int = 0) -> tuple[Any, ...]:
    """Seeded core inputs as torch tensors, positional (``state``, then each camera): what
    the exporters trace with and quick-check against."""
    import numpy as np
    import torch

    from policy_export.inputs import checkpoint_inputs

    feed = checkpoint_inputs(ckpt, batch, np.random.default_rng(seed), image_format)
    return tuple(torch.from_numpy(feed[n]) for n in ckpt.spec.input_names)


def build_core(ckpt: LoadedCheckpoint, image_format: str = "float32") -> Any:
    """Return an eval-mode ``ACTCore`` with the checkpoint's normalization baked in."""
    import torch

    from policy_export_wrappers.act import ACTCore, FeatureNormalizer

    spec = ckpt.spec

    def normalizer(key: str, stats: dict, inverse: bool) -> FeatureNormalizer:
        mode = spec.normalization.get(key, "IDENTITY")
        tensors = {k: torch.from_numpy(v) for k, v in stats.get(key, {}).items()} if mode != "IDENTITY" else None
        return FeatureNormalizer(mode, tensors, inverse=inverse, eps=ckpt.eps)

    core = ACTCore(
        ckpt.policy.model,
        image_shapes=[c.shape for c in spec.cameras],
        state_normalizer=normalizer(spec.state_key, ckpt.input_stats, inverse=False),
        image_normalizers=[normalizer(c.key, ckpt.input_stats, inverse=False) for c in spec.cameras],
        action_unnormalizer=normalizer(ACTION_KEY, ckpt.output_stats, inverse=True),
        image_format=image_format,
    )
    return core.eval()
