"""LeRobot's own eager inference: the reference every artifact is compared against."""

from __future__ import annotations

import numpy as np

from policy_export.checkpoint import LoadedCheckpoint
from policy_export.inputs import to_float_images


def lerobot_observation(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str = "float32") -> dict:
    """Named core inputs -> the observation dict LeRobot's preprocessor expects (noise inputs are not observations)."""
    import torch

    feed = to_float_images(feed, ckpt.spec, image_format)
    obs = {ckpt.spec.state_key: torch.from_numpy(np.ascontiguousarray(feed["state"]))}
    for cam in ckpt.spec.cameras:
        obs[cam.key] = torch.from_numpy(np.ascontiguousarray(feed[cam.input_name]))
    return obs


def eager_chunk(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str = "float32") -> np.ndarray:
    """LeRobot's chunk in robot units on the core's inputs, as the checkpoint's family computes it."""
    from policy_export.families import family_for

    return family_for(ckpt.spec.policy_type).reference_chunk(ckpt, feed, image_format)
