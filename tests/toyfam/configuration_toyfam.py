"""LeRobot config of the test-only ``toyfam`` policy: ACT's config (features, normalization, chunking) plus a gain."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.act.configuration_act import ACTConfig


@PreTrainedConfig.register_subclass("toyfam")
@dataclass
class ToyfamConfig(ACTConfig):
    #: How much of the caller's noise sample the chunk carries.
    gain: float = 0.5
