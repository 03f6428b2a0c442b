"""Diffusion Policy, toolchain half: core, LeRobot reference (with the same noise) and rollout mode.

Its declaration is :class:`policy_export.declarations.diffusion.DiffusionDeclaration`.

The core is :class:`policy_export_wrappers.diffusion.DiffusionCore`; the host shim is the
observation history + action queue of :mod:`policy_export.runtime.history`. The reference is
LeRobot's own ``predict_action_chunk(batch, noise=...)`` / ``select_action(batch, noise=...)``;
for DDPM the per-step draws ``scheduler.step`` makes are replayed from the core's
``step_noise`` input (:func:`replayed_ddpm_draws`), the only change to LeRobot's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.declarations.diffusion import NOISE, STEP_NOISE, DiffusionDeclaration
from policy_export.families.base import Family, ReferenceRollout, RolloutMode, core_normalizers
from policy_export.reference import lerobot_observation
from policy_export.spec import PolicySpec

if TYPE_CHECKING:
    import torch

    from policy_export.checkpoint import LoadedCheckpoint


@contextmanager
def replayed_ddpm_draws(step_noise: torch.Tensor | None) -> Iterator[None]:
    """Make diffusers' DDPM ``scheduler.step`` take its per-step draws from ``step_noise``
    ``[B, n_draws, horizon, A]`` in order, instead of the global torch generator.

    Everything else in LeRobot's loop runs unchanged. Every draw must be consumed, and no
    more: a mismatch means the core and LeRobot disagree about the loop, which is an error.
    With ``step_noise=None`` nothing is patched (DDIM, or a step the candidate did not call).
    """
    if step_noise is None:
        yield
        return
    import diffusers.schedulers.scheduling_ddpm as ddpm

    draws = list(step_noise.unbind(1))
    used = [0]
    original = ddpm.randn_tensor

    def replay(
        shape: tuple[int, ...],
        generator: object = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **_: object,
    ) -> torch.Tensor:
        if used[0] >= len(draws):
            raise RuntimeError(f"DDPM drew more than the {len(draws)} step_noise draws given")
        x = draws[used[0]]
        used[0] += 1
        if tuple(x.shape) != tuple(shape):
            raise RuntimeError(f"DDPM drew {tuple(shape)}, step_noise holds {tuple(x.shape)}")
        return x.to(device=device, dtype=dtype)

    ddpm.randn_tensor = replay  # type: ignore[assignment]  # same call signature, keywords as diffusers passes them
    try:
        yield
    finally:
        ddpm.randn_tensor = original
    if used[0] not in (0, len(draws)):
        raise RuntimeError(f"DDPM used {used[0]} of the {len(draws)} step_noise draws")


class DiffusionFamily(Family):
    declaration = DiffusionDeclaration()
    # The legacy exporter keeps the scripted denoising loop as an ONNX Loop (see for_tracing);
    # dynamo unrolls the Python loop (73 s against 9.8 s for the legacy exporter on a tiny 3-step
    # policy when both unrolled, and over 30 min at LeRobot's default 100 steps).
    onnx_exporter = "legacy"

    def build_core(self, ckpt: LoadedCheckpoint, image_format: str) -> torch.nn.Module:
        from policy_export_wrappers.diffusion import DiffusionCore

        core = DiffusionCore(
            ckpt.policy.diffusion,
            image_shapes=[c.shape for c in ckpt.spec.cameras],
            image_format=image_format,
            **core_normalizers(ckpt),
        )
        return core.eval()

    def for_tracing(self, core: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        """The core traced around a scripted denoising loop: one U-Net in a TorchScript / ONNX
        ``Loop``, not ``num_inference_steps`` unrolled copies (which took the ONNX exporter over
        30 minutes at LeRobot's default 100 steps)."""
        import torch

        from policy_export_wrappers.diffusion import DiffusionCore, script_for_export

        assert isinstance(core, DiffusionCore)
        return torch.jit.trace(script_for_export(core, args), args, check_trace=False)

    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """preprocessor -> ``predict_action_chunk(batch, noise=...)`` (empty queues, so it takes the
        history as given, i.e. ``generate_actions``) -> postprocessor, DDPM draws replayed."""
        import torch

        ckpt.policy.reset()  # empty queues: predict_action_chunk uses the batch's own history
        noise = torch.from_numpy(np.ascontiguousarray(feed[NOISE]))
        step = feed.get(STEP_NOISE)
        with torch.inference_mode(), replayed_ddpm_draws(None if step is None else torch.from_numpy(step)):
            batch = ckpt.preprocessor(lerobot_observation(ckpt, feed, image_format))
            chunk = ckpt.policy.predict_action_chunk(batch, noise=noise)
            return ckpt.postprocessor(chunk).detach().cpu().numpy().astype(np.float32)

    def rollout_modes(self, spec: PolicySpec) -> list[RolloutMode]:
        return [RolloutMode(f"rollout history n_obs={spec.host.history} queue n={spec.n_action_steps}", spec)]

    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout:
        return DiffusionRollout(ckpt)


class DiffusionRollout(ReferenceRollout):
    """LeRobot's ``DiffusionPolicy.select_action(batch, noise=...)``, counting chunk predictions."""

    def __enter__(self) -> DiffusionRollout:
        self._count_chunk_calls()
        self.ckpt.policy.reset()
        return self

    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        return self.select_lerobot(lerobot_observation(self.ckpt, feed, image_format), core_feed)

    def select_lerobot(self, observation: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        import torch

        ckpt = self.ckpt
        noise = step = None
        if core_feed is not None:
            noise = torch.from_numpy(np.ascontiguousarray(core_feed[NOISE]))
            if STEP_NOISE in core_feed:
                step = torch.from_numpy(np.ascontiguousarray(core_feed[STEP_NOISE]))
        with torch.inference_mode(), replayed_ddpm_draws(step):
            batch = ckpt.preprocessor(observation)
            action = ckpt.policy.select_action(batch, noise=noise)
            return ckpt.postprocessor(action).detach().cpu().numpy().astype(np.float32)

    def __exit__(self, *exc: object) -> None:
        self._stop_counting()
