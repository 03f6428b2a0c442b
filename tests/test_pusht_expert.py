"""The scripted PushT expert's pure logic (benchmarks/pusht_expert.py): it is what the trained ACT in
BENCHMARKS.md imitates, so a sign error here would silently turn that figure into noise. No simulator."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "pusht_expert", Path(__file__).resolve().parents[1] / "benchmarks" / "pusht_expert.py"
)
assert _spec is not None and _spec.loader is not None
expert = importlib.util.module_from_spec(_spec)
sys.modules["pusht_expert"] = expert  # dataclasses resolve annotations through it
_spec.loader.exec_module(expert)

#: The T away from the goal at the goal's angle: only translation is left.
BLOCK = (356.0, 256.0, math.pi / 4)


def _push_direction() -> np.ndarray:
    err = expert.body_point(expert.GOAL_POSE, expert.T_COG) - expert.body_point(BLOCK, expert.T_COG)
    return err / np.linalg.norm(err)


def test_body_point_matches_pymunk_convention() -> None:
    # pymunk's local_to_world: rotate by the body angle, then translate.
    assert np.allclose(expert.body_point((10.0, 20.0, math.pi / 2), (0.0, 45.0)), [-35.0, 20.0])


def test_lined_up_behind_the_t_pushes_toward_the_goal_and_in_front_walks_around() -> None:
    u = _push_direction()
    cog = expert.body_point(BLOCK, expert.T_COG)
    behind = (cog - u * expert.ExpertParams().behind).astype(np.float32)
    step = expert.expert_action(behind, BLOCK) - behind
    assert step @ u > 0.9 * np.linalg.norm(step) > 0  # pushes along the goal direction

    in_front = (cog + u * 60).astype(np.float32)  # between the T and the goal: pushing now would push it away
    target = expert.expert_action(in_front, BLOCK)
    perp = np.array([-u[1], u[0]])
    assert abs((target - cog) @ perp) > 50  # goes around the T, not through it
    assert (target - cog) @ u < 0  # toward the far side
    assert np.all((target >= 0) & (target <= 512))
