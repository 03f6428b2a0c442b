"""policy-export's side of the test-only ``toyfam`` family: what a new family writes, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policy_export.declarations.base import Declaration, Declared, FieldRule
from policy_export.errors import UnavailableError
from policy_export.families import Family, ReferenceRollout, RolloutMode, core_normalizers
from policy_export.reference import lerobot_observation
from policy_export.spec import ACTION_DIM, BATCH, CHUNK, HostDecl, PolicySpec, Role, TensorDecl, observation_inputs


class ToyDeclaration(Declaration):
    policy_type = "toyfam"
    fields: ClassVar[dict[str, FieldRule]] = {"gain": FieldRule("float", lo=0.0, hi=10.0)}

    def declare(self, cfg: Any, spec: PolicySpec, config_path: Path) -> Declared:
        noise = TensorDecl("noise", Role.NOISE, (BATCH, CHUNK, ACTION_DIM), units="standard normal, normalized")
        return Declared(
            chunk_size=int(cfg.chunk_size),
            n_action_steps=int(cfg.n_action_steps),
            inputs=(*observation_inputs(spec.state_dim, spec.cameras, spec.state_key), noise),
            host=HostDecl(),
            family={"gain": float(cfg.gain)},
        )


class ToyCore(nn.Module):
    """The exported core: the policy's math with normalization baked in, noise as an input."""

    def __init__(
        self,
        proj: nn.Linear,
        gain: float,
        state_normalizer: nn.Module,
        image_normalizers: list,
        action_unnormalizer: nn.Module,
    ) -> None:
        super().__init__()
        self.proj, self.gain = proj, gain
        self.state_normalizer = state_normalizer
        self.image_normalizers = nn.ModuleList(image_normalizers)
        self.action_unnormalizer = action_unnormalizer

    def forward(self, state: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        *images, noise = rest
        base = self.proj(self.state_normalizer(state))
        for norm, img in zip(self.image_normalizers, images, strict=True):
            base = base + norm(img).mean(dim=(1, 2, 3))[:, None]
        chunk = base[:, None, :] + self.gain * noise
        return self.action_unnormalizer(chunk)


class ToyFamily(Family):
    declaration = ToyDeclaration()

    def build_core(self, ckpt: Any, image_format: str) -> nn.Module:
        assert image_format == "float32", "the toy core takes float images only"
        return ToyCore(ckpt.policy.proj, ckpt.spec.family["gain"], **core_normalizers(ckpt)).eval()

    def reference_chunk(self, ckpt: Any, feed: dict[str, np.ndarray], image_format: str) -> np.ndarray:
        """LeRobot's preprocessor -> the plugin's predict_action_chunk(noise=the core's noise) -> postprocessor."""
        with torch.inference_mode():
            batch = ckpt.preprocessor(lerobot_observation(ckpt, feed, image_format))
            chunk = ckpt.policy.predict_action_chunk(batch, noise=torch.from_numpy(feed["noise"]))
            return ckpt.postprocessor(chunk).numpy().astype(np.float32)

    def reference_rollout(self, ckpt: Any, mode: RolloutMode) -> ReferenceRollout:
        raise UnavailableError("toyfam has no rollout reference")


def build_checkpoint(out: Path, gain: float = 0.5) -> Path:
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    from toyfam.configuration_toyfam import ToyfamConfig
    from toyfam.modeling_toyfam import ToyfamPolicy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = ToyfamConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (3,)),
            "observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 8, 10)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
        chunk_size=4,
        n_action_steps=2,
        normalization_mapping={
            "VISUAL": NormalizationMode.MEAN_STD,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        },
        pretrained_backbone_weights=None,
        device="cpu",
        gain=gain,
    )
    policy = ToyfamPolicy(cfg)

    def stats(dim: int) -> dict[str, np.ndarray]:
        mean, std = rng.normal(0, 1, dim).astype(np.float32), rng.uniform(0.2, 2, dim).astype(np.float32)
        return {"mean": mean, "std": std, "min": mean - 2 * std, "max": mean + 2 * std, "count": np.array([100])}

    image = {
        "mean": rng.uniform(0.3, 0.6, (3, 1, 1)).astype(np.float32),
        "std": np.full((3, 1, 1), 0.25, np.float32),
        "min": np.zeros((3, 1, 1), np.float32),
        "max": np.ones((3, 1, 1), np.float32),
        "count": np.array([100]),
    }
    pre, post = make_act_pre_post_processors(
        cfg, dataset_stats={"observation.state": stats(3), "action": stats(2), "observation.images.top": image}
    )
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out
