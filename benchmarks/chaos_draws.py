"""The chaos baseline as a distribution: eager against itself under several one-ulp perturbation draws.

``eval`` measures one draw per episode; contact dynamics make the step at which that draw leaves the
tolerance a random variable, so this script shows its spread beside an fp32 artifact's, on one episode:

    python benchmarks/chaos_draws.py CKPT ARTIFACT.onnx --env aloha --steps 60 --draws 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--env", default="aloha")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from policy_export.checkpoint import load_checkpoint
    from policy_export.runtime.backends import LocalCore
    from policy_export.sim.envs import make_sim
    from policy_export.sim.episodes import ClientPolicy, EagerPolicy, SidePolicy, run_episode
    from policy_export.sim.evaluate import compare_episode

    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    sim = make_sim(args.env, steps=args.steps, policy_config=ckpt.policy.config)
    ref = run_episode(sim, EagerPolicy(ckpt, sim, args.seed), 0, args.seed)
    rows: dict[str, dict[str, int | None]] = {}
    runners: dict[str, SidePolicy] = {
        f"eager+1ulp draw {d}": EagerPolicy(ckpt, sim, args.seed, perturb_seed=100 + d) for d in range(args.draws)
    }
    runners[args.artifact.name] = ClientPolicy(
        "artifact", LocalCore(args.artifact, threads=1), sim.fps, args.seed, None
    )
    for name, policy in runners.items():
        row = compare_episode(ref, run_episode(sim, policy, 0, args.seed), ckpt.action_scale, args.tolerance)
        rows[name] = {"left_tolerance_at": row.first_divergence, "within_10x_at": row.first_within_margin}
        print(f"{name:40s} left {args.tolerance:g} at {row.first_divergence}, within 10x at {row.first_within_margin}")
    if args.json:
        args.json.write_text(json.dumps({"env": args.env, "steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
