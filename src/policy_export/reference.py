"""LeRobot's own eager inference: the reference every artifact is compared against.

The family's reference (:meth:`policy_export.families.Family.reference_chunk`) calls LeRobot;
this module holds what every family shares: turning the core's named inputs back into the
observation dict LeRobot's preprocessor takes.
"""

from __future__ import annotations

import numpy as np

from policy_export.checkpoint import LoadedCheckpoint
from policy_export.inputs import to_float_images
from policy_export.spec import OBSERVATION_ROLES


def lerobot_observation(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], image_format: str = "float32") -> dict:
    """Named core inputs -> the observation dict LeRobot's preprocessor expects: each observation
    input under its LeRobot key (the other inputs, e.g. noise, are the family reference's to pass)."""
    import torch

    feed = to_float_images(feed, ckpt.spec, image_format)
    return {
        t.key: torch.from_numpy(np.ascontiguousarray(feed[t.name]))
        for t in ckpt.spec.signature.with_role(*OBSERVATION_ROLES)
    }
