"""A robot's control loop on a bare robot host: ``python robot_host_loop.py ARTIFACT STEPS``.

Run by tests/test_packaging.py and ``nox -s robot_host`` with the interpreter of a venv holding only
numpy, onnxruntime and the policy-export wheel. Prints one JSON line: what got imported, the action
shapes, and the client's stats.
"""

import importlib.util
import json
import sys
import time

import numpy as np

from policy_export.runtime import PolicyClient

FORBIDDEN = ("torch", "lerobot", "transformers", "onnx")


def main() -> None:
    artifact, steps, fps = sys.argv[1], int(sys.argv[2]), 30.0
    absent = {m: importlib.util.find_spec(m) is None for m in FORBIDDEN}
    rng = np.random.default_rng(0)
    with PolicyClient.from_artifact(artifact).realtime(fps=fps) as policy:
        spec = policy.metadata.spec
        obs = {spec.state_key: rng.standard_normal(spec.state_dim).astype(np.float32)}
        for cam in spec.cameras:
            obs[cam.key] = rng.random(cam.shape, dtype=np.float32)
        policy.reset()
        shapes, start = set(), time.monotonic()
        for step in range(steps):
            shapes.add(policy.select_action(obs).shape)
            time.sleep(max(0.0, start + (step + 1) / fps - time.monotonic()))  # the robot's own pace
        stats = policy.stats()
    print(
        json.dumps(
            {
                "absent": absent,
                "loaded": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN),
                "shapes": sorted(shapes),
                "action_dim": spec.action_dim,
                "chunks_received": stats["chunks_received"],
                "steps": stats["steps"],
                "fallback_ticks": stats.get("fallback_ticks"),
                "file": sys.modules["policy_export"].__file__,
            }
        )
    )


if __name__ == "__main__":
    main()
