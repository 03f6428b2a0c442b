"""pi0 and pi0.5, toolchain half: core (per-model tables from LeRobot's own modules), LeRobot reference.

Declarations: :class:`policy_export.declarations.pi.PiDeclaration`; core:
:class:`policy_export_wrappers.pi.PiCore`, traced around SmolVLA's scripted Euler loop. The
reference is LeRobot's ``predict_action_chunk(batch, noise=..., prev_chunk_left_over=...,
inference_delay=...)`` with RTC enabled as LeRobot's rollout enables it and the leftover
normalized with LeRobot's own postprocessor statistics, exactly as SmolVLA's
(:mod:`policy_export.families.smolvla`, whose helpers are reused).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.declarations.pi import PiDeclaration, load_tokenizer
from policy_export.declarations.smolvla import NOISE
from policy_export.families.base import Family, ReferenceRollout, RolloutMode, feature_normalizer
from policy_export.families.smolvla import _lerobot_batch, lerobot_rtc_chunk

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from policy_export.checkpoint import LoadedCheckpoint


def time_table(model: Any, kind: str, num_steps: int) -> torch.Tensor:
    """Per flow step ``[num_steps, W]``: pi0's timestep embedding (``create_sinusoidal_pos_embedding`` on
    LeRobot's float32 time tensor), or pi0.5's adaRMS condition, that embedding through LeRobot's own
    ``time_mlp_in`` -> silu -> ``time_mlp_out`` -> silu."""
    import torch
    import torch.nn.functional as F
    from lerobot.policies.common.vla_utils import create_sinusoidal_pos_embedding

    from policy_export.families.smolvla_tables import flow_schedule

    times, _ = flow_schedule(num_steps)
    rows = []
    with torch.no_grad():
        for t in times:
            time = torch.tensor(t, dtype=torch.float32).expand(1)
            emb = create_sinusoidal_pos_embedding(
                time,
                model.action_in_proj.out_features,
                model.config.min_period,
                model.config.max_period,
                device=torch.device("cpu"),
            ).type(dtype=torch.float32)
            if kind == "pi05":
                emb = F.silu(model.time_mlp_out(F.silu(model.time_mlp_in(emb))))
            rows.append(emb)
    return torch.cat(rows)


class PiFamily(Family):
    # The legacy exporter keeps the scripted Euler loop as one ONNX Loop, as for SmolVLA.
    onnx_exporter = "legacy"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.declaration = PiDeclaration(kind)

    def build_core(self, ckpt: LoadedCheckpoint, image_format: str) -> torch.nn.Module:
        from policy_export.families.smolvla_tables import (
            RTCSettings,
            flow_schedule,
            guidance_weights,
            prefix_weight_table,
        )
        from policy_export_wrappers.pi import PiCore

        spec = ckpt.spec
        cfg = ckpt.policy.config
        model = ckpt.policy.model
        rtc = RTCSettings.of(cfg)
        steps = int(cfg.num_inference_steps)
        times, dt = flow_schedule(steps)
        try:
            core = PiCore(
                model,
                kind=self.kind,
                image_shapes=[c.shape for c in spec.cameras],
                state_normalizer=feature_normalizer(ckpt, spec.state_key, ckpt.input_stats, inverse=False),
                image_normalizers=[
                    feature_normalizer(ckpt, c.key, ckpt.input_stats, inverse=False) for c in spec.cameras
                ],
                action_normalizer=feature_normalizer(ckpt, spec.action_key, ckpt.output_stats, inverse=False),
                action_unnormalizer=feature_normalizer(ckpt, spec.action_key, ckpt.output_stats, inverse=True),
                action_dim=spec.action_dim,
                time_table=time_table(model, self.kind, steps),
                times=times,
                guidance=guidance_weights(steps, rtc.max_guidance_weight),
                dt=dt,
                prefix_weights=prefix_weight_table(rtc, int(cfg.chunk_size)),
                execution_horizon=rtc.execution_horizon,
                image_format=image_format,
            )
        except ValueError as exc:
            from policy_export.errors import BadInputError

            raise BadInputError(f"{ckpt.path / 'config.json'}: {exc}") from exc
        return core.eval()

    def for_tracing(self, core: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.nn.Module:
        """Traced around the scripted Euler loop: one expert step in a TorchScript / ONNX ``Loop``."""
        import torch

        from policy_export_wrappers.smolvla import script_for_export

        return torch.jit.trace(script_for_export(core, args), args, check_trace=False)

    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """preprocessor -> ``predict_action_chunk(batch, noise=..., [RTC])`` -> postprocessor (the prompt's
        tokens are the feed's, as the core was given them)."""
        return lerobot_rtc_chunk(ckpt, feed, image_format)

    def write_sidecars(self, ckpt: LoadedCheckpoint, artifact: Path) -> list[Path]:
        """``<artifact>.tokenizer.json``: the tokenizer the robot's host loads (the one the metadata's sha256 names)."""
        from policy_export.language import SIDECAR_SUFFIX, write_tokenizer_json

        path = artifact.with_name(artifact.name + SIDECAR_SUFFIX)
        write_tokenizer_json(load_tokenizer(ckpt.path), path)
        return [path]

    def rollout_modes(self, spec: Any) -> list[RolloutMode]:
        return [RolloutMode(f"rollout queue n={spec.n_action_steps}", spec)]

    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout:
        return PiRollout(ckpt)


class PiRollout(ReferenceRollout):
    """LeRobot's action queue over ``predict_action_chunk(batch, noise=...)`` (pi0 / pi0.5's
    ``select_action`` takes no noise: this is its queue logic, fed the core's draws; the prompt is
    LeRobot's preprocessor's own, from the rollout's task)."""

    def __enter__(self) -> PiRollout:
        self._count_chunk_calls()
        self.ckpt.policy.reset()
        self._queue: list[np.ndarray] = []
        self._last_feed: dict[str, np.ndarray] = {}
        return self

    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        if core_feed is not None:
            self._last_feed = core_feed
        if not self._queue:
            merged = {**self._last_feed, **feed}
            # With the rollout's task, LeRobot's own preprocessor writes the prompt (pi0.5: from the state):
            # the host's tokenization is checked too, not handed over.
            self._predict(_lerobot_batch(self.ckpt, merged, image_format, task=self.task))
        return self._queue.pop(0)

    def select_lerobot(self, observation: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        """``policy-export eval``'s eager side: the env's observation (its task included) through LeRobot's
        preprocessor, which writes the prompt (pi0.5: with the discretized state)."""
        import torch

        if core_feed is not None:
            self._last_feed = core_feed
        if not self._queue:
            with torch.inference_mode():
                self._predict(dict(self.ckpt.preprocessor(observation)))
        return self._queue.pop(0)

    def _predict(self, batch: dict[str, Any]) -> None:
        """One chunk into the queue: LeRobot's ``predict_action_chunk`` on the episode's noise, cut at
        ``n_action_steps`` as its ``select_action`` cuts it."""
        import torch

        ckpt = self.ckpt
        noise = torch.from_numpy(np.ascontiguousarray(self._last_feed[NOISE]))
        n = int(ckpt.policy.config.n_action_steps)
        with torch.inference_mode():
            chunk = ckpt.policy.predict_action_chunk(batch, noise=noise)[:, :n]
            actions = np.asarray(ckpt.postprocessor(chunk).detach().cpu().numpy(), np.float32)
        self._queue = [actions[:, i] for i in range(actions.shape[1])]

    def reset(self) -> None:
        super().reset()
        self._queue = []

    def __exit__(self, *exc: object) -> None:
        self._stop_counting()
