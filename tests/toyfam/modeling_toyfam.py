"""The test-only ``toyfam`` LeRobot policy: chunk = W state_n + b + sum of camera means + gain * noise."""

from __future__ import annotations

import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import nn

from toyfam.configuration_toyfam import ToyfamConfig


class ToyfamPolicy(PreTrainedPolicy):
    config_class = ToyfamConfig
    name = "toyfam"

    def __init__(self, config: ToyfamConfig, **kwargs: object) -> None:
        super().__init__(config)
        self.config = config
        self.proj = nn.Linear(config.robot_state_feature.shape[0], config.action_feature.shape[0])

    def get_optim_params(self) -> dict:
        return self.parameters()

    def reset(self) -> None:
        pass

    def forward(self, batch: dict) -> tuple:
        raise NotImplementedError("inference only")

    def predict_action_chunk(self, batch: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized chunk ``[B, chunk_size, A]`` (the postprocessor unnormalizes it)."""
        state = batch["observation.state"]
        cams = sum(batch[k].mean(dim=(1, 2, 3)) for k in self.config.image_features)
        base = self.proj(state) + cams[:, None]
        chunk = base[:, None, :].expand(-1, self.config.chunk_size, -1)
        if noise is None:
            noise = torch.randn_like(chunk)
        return chunk + self.config.gain * noise

    def select_action(self, batch: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_action_chunk(batch, noise)[:, 0]
