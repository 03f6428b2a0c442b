"""A scripted PushT expert, a LeRobotDataset recorded with it, and a small ACT trained on that with LeRobot's own
training code: a competent policy for closed-loop figures that mean something (issue 19, item 6).

Why scripted: no trained checkpoint can be downloaded here. The expert reads the T's pose from the simulator
(privileged state); the policy only sees what LeRobot's pusht policies see (96x96 image + agent position).

    python benchmarks/pusht_expert.py expert --episodes 10          # the expert's own return/success
    python benchmarks/pusht_expert.py record --episodes 40 --root reports/trained/dataset
    (then lerobot-train, policy-export onnx and policy-export eval: `nox -s pusht_trained`)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: LeRobot's / gym-pusht's goal pose of the T's body: x, y (pixels), angle (radians).
GOAL_POSE = (256.0, 256.0, math.pi / 4)
#: The T's centre of gravity in its body frame (gym-pusht's add_tee with scale 30: mean of its two bars' centres).
T_COG = (0.0, 45.0)


@dataclass(frozen=True)
class ExpertParams:
    """Distances in pixels; chosen by a few episodes of trial, not tuned."""

    behind: float = 75.0  # how far behind the T's centre the pusher lines up
    clearance: float = 95.0  # radius kept from the T while walking around it
    lined_up: float = 18.0  # how close to the push point counts as lined up
    push_step: float = 40.0
    contact: float = 10.0  # closest the pusher gets to the T's centre along the push line  # how far ahead of the agent the target is while pushing
    turn_gain: float = 0.0  # pixels of sideways offset of the push point per radian of angle error
    done: float = 6.0  # translation error below which only rotation is corrected


def body_point(pose: tuple[float, float, float], local: tuple[float, float]) -> np.ndarray:
    """A point of the T's body frame in world pixels (pymunk's local_to_world)."""
    x, y, a = pose
    c, s = math.cos(a), math.sin(a)
    return np.array([x + c * local[0] - s * local[1], y + s * local[0] + c * local[1]])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def expert_action(agent: np.ndarray, block: tuple[float, float, float], p: ExpertParams = ExpertParams()) -> np.ndarray:
    """The target position (pixels) for the agent, from the agent's position and the T's pose.

    Pure logic: translate the T's centre of gravity toward the goal's by pushing from behind it, walking around
    the T first when the agent is on the wrong side; the push point is offset sideways in proportion to the
    angle error, so an off-centre push also turns the T toward the goal angle.
    """
    cog = body_point(block, T_COG)
    goal_cog = body_point(GOAL_POSE, T_COG)
    err = goal_cog - cog
    dist = float(np.linalg.norm(err))
    angle_err = _wrap(GOAL_POSE[2] - block[2])
    if dist < p.done:
        # Only rotation left: push perpendicular to the lever arm. Use the bar's end as lever.
        err = np.array([math.cos(block[2] + math.pi / 2), math.sin(block[2] + math.pi / 2)])
        dist = 1.0
    u = err / dist
    perp = np.array([-u[1], u[0]])
    # An off-centre push turns the body: positive offset along perp gives a clockwise/anticlockwise torque.
    offset = float(np.clip(angle_err, -1.0, 1.0)) * p.turn_gain
    push_point = cog - u * p.behind + perp * offset
    rel = agent - cog
    along = float(rel @ u)
    lateral = float((agent - push_point) @ perp)
    if abs(lateral) < p.lined_up and -p.behind - p.lined_up < along < -p.contact:
        # Lined up behind the T: push along u, steering back onto the push line.
        target = agent + u * p.push_step - perp * lateral
    elif along > -0.5 * p.behind:
        # In front of or beside the T: walk around it on the agent's side before lining up.
        side = 1.0 if float(rel @ perp) >= 0 else -1.0
        target = cog + perp * side * p.clearance - u * p.behind
    else:
        target = push_point
    return np.clip(target, 0.0, 512.0).astype(np.float32)


def _unwrapped(env: Any) -> Any:
    return env.envs[0].unwrapped


def block_pose(env: Any) -> tuple[float, float, float]:
    block = _unwrapped(env).block
    return float(block.position[0]), float(block.position[1]), float(block.angle)


def run_expert(episodes: int, seed: int, steps: int, on_frame: Any = None, on_episode: Any = None) -> list[dict]:
    """Expert episodes through LeRobot's env factory (the same env `policy-export eval --env pusht` uses)."""
    from policy_export.sim.envs import make_sim

    sim = make_sim("pusht", steps=steps)
    env = sim.env
    results = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=[seed + ep])
        total, success, n = 0.0, False, 0
        for _ in range(steps):
            agent = np.asarray(obs["agent_pos"][0], dtype=np.float32)
            action = expert_action(agent, block_pose(env))
            if on_frame is not None:
                on_frame(np.asarray(obs["pixels"][0]), agent, action)
            obs, reward, terminated, truncated, info = env.step(action[None])
            total += float(reward[0])
            n += 1
            success = success or bool(np.asarray(info.get("is_success", [False])).reshape(-1)[0])
            if terminated[0] or truncated[0]:
                break
        results.append({"episode": ep, "seed": seed + ep, "return": total, "success": success, "steps": n})
        if on_episode is not None:
            on_episode()
        print(json.dumps(results[-1]), flush=True)
    sim.close()
    return results


def summary(results: list[dict]) -> dict:
    return {
        "episodes": len(results),
        "mean_return": float(np.mean([r["return"] for r in results])),
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_steps": float(np.mean([r["steps"] for r in results])),
    }


def record(root: str, repo_id: str, episodes: int, seed: int, steps: int) -> dict:
    """LeRobot's own LeRobotDataset.create / add_frame / save_episode, with pusht's features."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.image": {"dtype": "image", "shape": (96, 96, 3), "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": (2,), "names": {"motors": ["x", "y"]}},
        "action": {"dtype": "float32", "shape": (2,), "names": {"motors": ["x", "y"]}},
    }
    ds = LeRobotDataset.create(repo_id, fps=10, root=root, features=features, use_videos=False, image_writer_threads=0)

    def on_frame(image: np.ndarray, agent: np.ndarray, action: np.ndarray) -> None:
        ds.add_frame({"observation.image": image, "observation.state": agent, "action": action, "task": "Push the T."})

    results = run_expert(episodes, seed, steps, on_frame=on_frame, on_episode=ds.save_episode)
    ds.finalize()  # writes the parquet footers: a dataset not finalized cannot be read back
    return summary(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["expert", "record"])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed (eval uses 0..N-1: kept apart)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--root", default="reports/trained/dataset")
    parser.add_argument("--repo-id", default="local/pusht_scripted")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    if args.mode == "expert":
        out = summary(run_expert(args.episodes, args.seed, args.steps))
    else:
        out = record(args.root, args.repo_id, args.episodes, args.seed, args.steps)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
