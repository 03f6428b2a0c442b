"""Build the stateless core (``policy_export_wrappers``) from a loaded checkpoint: the family's job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policy_export.checkpoint import LoadedCheckpoint

if TYPE_CHECKING:
    from pathlib import Path

    import torch


def example_args(ckpt: LoadedCheckpoint, batch: int, image_format: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded core inputs as torch tensors, positional (``state``, each camera, then any noise):
    what the exporters trace with and quick-check against."""
    import numpy as np
    import torch

    from policy_export.inputs import checkpoint_inputs

    feed = checkpoint_inputs(ckpt, batch, np.random.default_rng(seed), image_format)
    return tuple(torch.from_numpy(feed[n]) for n in ckpt.spec.input_names)


def build_core(ckpt: LoadedCheckpoint, image_format: str = "float32") -> torch.nn.Module:
    """The checkpoint's family's eval-mode core, with the checkpoint's normalization baked in."""
    from policy_export.families import family_for

    return family_for(ckpt.spec.policy_type).build_core(ckpt, image_format)


def for_tracing(ckpt: LoadedCheckpoint, core: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """What the TorchScript-based exporters trace for this core: the family decides (loops stay loops)."""
    from policy_export.families import family_for

    return family_for(ckpt.spec.policy_type).for_tracing(core, args)


def write_sidecars(ckpt: LoadedCheckpoint, artifact: Path) -> list[Path]:
    """The files the checkpoint's family writes beside an exported artifact (e.g. a VLA's tokenizer)."""
    from policy_export.families import family_for

    return family_for(ckpt.spec.policy_type).write_sidecars(ckpt, artifact)
