"""Load a LeRobot ``pretrained_model`` directory offline and describe its interface.

- :mod:`.load`: :func:`load_checkpoint`, through LeRobot's public API, and :class:`LoadedCheckpoint`;
- :mod:`.files`: the checks made on the files before LeRobot sees them;
- :mod:`.normalization`: statistics, modes, their checks and the normalization fingerprint;
- :mod:`.diagnose`: the one line for a config.json that disagrees with its weights;
- :mod:`.keys`: LeRobot's state/action feature keys.

A package so that each of those has one home; every name is importable from here as before.
"""

from policy_export.checkpoint.files import unreadable
from policy_export.checkpoint.keys import ACTION_KEY, ENV_STATE_KEY, STATE_KEY
from policy_export.checkpoint.load import LoadedCheckpoint, load_checkpoint
from policy_export.checkpoint.normalization import norm_hash

__all__ = [
    "ACTION_KEY",
    "ENV_STATE_KEY",
    "STATE_KEY",
    "LoadedCheckpoint",
    "load_checkpoint",
    "norm_hash",
    "unreadable",
]
