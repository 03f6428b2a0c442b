"""ACT (Action Chunking Transformer), toolchain half: core, LeRobot reference and rollout modes.

Its declaration is :class:`policy_export.declarations.act.ACTDeclaration`.

The core is :class:`policy_export_wrappers.act.ACTCore`; the host shim is the action queue or
temporal ensembler of :mod:`policy_export.runtime.shim`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.declarations.act import ACTDeclaration
from policy_export.families.base import Family, ReferenceRollout, RolloutMode, core_normalizers
from policy_export.reference import lerobot_observation
from policy_export.spec import HostDecl, PolicySpec

if TYPE_CHECKING:
    import torch

    from policy_export.checkpoint import LoadedCheckpoint


def predict_chunk(
    ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str, **kwargs: object
) -> np.ndarray:
    """preprocessor -> ``predict_action_chunk(batch, **kwargs)`` -> postprocessor, in robot units."""
    import torch

    with torch.inference_mode():
        batch = ckpt.preprocessor(lerobot_observation(ckpt, feed, image_format))
        chunk = ckpt.policy.predict_action_chunk(batch, **kwargs)
        return ckpt.postprocessor(chunk).detach().cpu().numpy().astype(np.float32)


class ACTFamily(Family):
    declaration = ACTDeclaration()
    # The decoder (one layer over chunk_size queries) and the action head: ~1% of the demo policy's FLOPs.
    # Quantized too, NNCF int8 of the demo policy erred by up to 2.1% of an action dimension's std; kept in
    # float, 1.5% (held-out synthetic frames, 20 calibration frames).
    quantize_float_scopes = ("decoder", "action_head")
    # NNCF int8 at the card's shape (3x480x640, chunk 100) erred 2.2-2.3% of the std with the encoder all int8;
    # its first layer (where the latent, state and 300 image tokens, of very different ranges, first meet
    # one per-tensor activation scale) kept in float, with NNCF's full bias correction, 1.6-2.0% over 9 fresh
    # draws (BENCHMARKS.md "CPU beyond fp32"). One encoder layer is ~8% of the FLOPs.
    openvino_float_scopes = ("encoder.layers.0",)
    # The faster int8 at equal accuracy, the demo policy at the card's shape in one quiet run (BENCHMARKS.md
    # "CPU beyond fp32", Zen 4 with AVX-512 VNNI): OpenVINO 2.55x ORT fp32 at 0.0172 of the std, ONNX Runtime
    # QDQ 2.05x at 0.0180.
    int8_runtime = "openvino"

    def build_core(self, ckpt: LoadedCheckpoint, image_format: str) -> torch.nn.Module:
        from policy_export_wrappers.act import ACTCore

        core = ACTCore(
            ckpt.policy.model,
            image_shapes=[c.shape for c in ckpt.spec.cameras],
            image_format=image_format,
            **core_normalizers(ckpt),
        )
        return core.eval()

    def reference_chunk(self, ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        return predict_chunk(ckpt, feed, image_format)

    def rollout_modes(self, spec: PolicySpec) -> list[RolloutMode]:
        """Queue mode always (the checkpoint's n_action_steps, or the whole chunk when the checkpoint
        ensembles with n_action_steps = 1); ensembling mode too when the checkpoint ensembles."""
        coeff = spec.host.ensemble_coeff
        n = spec.n_action_steps if coeff is None or spec.n_action_steps > 1 else spec.chunk_size
        modes = [
            RolloutMode(
                f"rollout queue n={n}",
                spec.replace(n_action_steps=n, host=HostDecl()),
                {"n_action_steps": n, "temporal_ensemble_coeff": None},
            )
        ]
        if coeff is not None:
            modes.append(
                RolloutMode(
                    f"rollout ensemble c={coeff:g}",
                    spec.replace(n_action_steps=1, host=HostDecl(ensemble_coeff=coeff)),
                    {"n_action_steps": 1, "temporal_ensemble_coeff": coeff},
                )
            )
        return modes

    def reference_rollout(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> ReferenceRollout:
        return ACTRollout(ckpt, mode)


class ACTRollout(ReferenceRollout):
    """LeRobot's ACT policy with its config switched to one mode (restored on exit), counting chunk calls."""

    def __init__(self, ckpt: LoadedCheckpoint, mode: RolloutMode) -> None:
        super().__init__(ckpt)
        self.mode = mode

    def __enter__(self) -> ACTRollout:
        from lerobot.policies.act.modeling_act import ACTTemporalEnsembler

        policy, cfg = self.ckpt.policy, self.ckpt.policy.config
        self._saved = (cfg.n_action_steps, cfg.temporal_ensemble_coeff, getattr(policy, "temporal_ensembler", None))
        cfg.n_action_steps = self.mode.config["n_action_steps"]
        cfg.temporal_ensemble_coeff = self.mode.config["temporal_ensemble_coeff"]
        if cfg.temporal_ensemble_coeff is not None:
            policy.temporal_ensembler = ACTTemporalEnsembler(cfg.temporal_ensemble_coeff, cfg.chunk_size)
        self._count_chunk_calls()
        return self

    def select_action(
        self, feed: dict[str, np.ndarray], image_format: str, core_feed: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        return self.select_lerobot(lerobot_observation(self.ckpt, feed, image_format), core_feed)

    def select_lerobot(self, observation: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        import torch

        ckpt = self.ckpt
        with torch.inference_mode():
            batch = ckpt.preprocessor(observation)
            action = ckpt.policy.select_action(batch)
            return ckpt.postprocessor(action).detach().cpu().numpy().astype(np.float32)

    def __exit__(self, *exc: object) -> None:
        policy, cfg = self.ckpt.policy, self.ckpt.policy.config
        cfg.n_action_steps, cfg.temporal_ensemble_coeff, ensembler = self._saved
        if ensembler is None:
            if hasattr(policy, "temporal_ensembler"):
                del policy.temporal_ensembler
        else:
            policy.temporal_ensembler = ensembler
        self._stop_counting()
