"""Per-chunk error of an fp32 export against eager's own float32 rounding (BENCHMARKS.md, aloha).

Separates an export's per-chunk error from closed-loop drift: on random inputs and on the env's
first real frame, it prints (normalized action space) the ONNX file vs the torch core, the torch
core in float32 vs float64 (eager's own rounding error), and the core with its inputs moved one
float32 ulp (what eval's chaos baseline does). An export whose error is the size of the last two
is as exact as float32 allows; a larger one is an export problem, not the simulator's chaos.

    python benchmarks/chunk_error.py CHECKPOINT policy.onnx [--env aloha] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("onnx")
    ap.add_argument("--env", default=None, help="also the env's first frame (seed 0): aloha or pusht")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    from policy_export.checkpoint import load_checkpoint
    from policy_export.core import build_core
    from policy_export.inputs import checkpoint_inputs

    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    scale, names = ckpt.action_scale, ckpt.spec.input_names
    core = build_core(ckpt).eval()
    core64 = copy.deepcopy(core).double()  # a deep copy: build_core shares LeRobot's modules
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    feeds = {f"random{i}": checkpoint_inputs(ckpt, 1, np.random.default_rng(i), "float32") for i in range(2)}
    if args.env:
        if ckpt.spec.noise_inputs or len(names) != 1 + len(ckpt.spec.cameras):
            raise SystemExit("--env: only for cores that take one state and one frame per camera (ACT)")
        from policy_export.sim.envs import make_sim, robot_observation

        sim = make_sim(args.env, steps=10)
        obs = robot_observation(sim.env.reset(seed=[0])[0])
        feed = {names[0]: obs[ckpt.spec.state_key][None].astype(np.float32)}
        for cam in ckpt.spec.cameras:
            feed[cam.input_name] = obs[cam.key].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
        feeds[f"{args.env}_frame"] = feed
    gen = torch.Generator().manual_seed(0)

    def ulp(t: torch.Tensor) -> torch.Tensor:
        up = torch.rand(t.shape, generator=gen) < 0.5
        return torch.nextafter(t, torch.where(up, torch.full_like(t, torch.inf), torch.full_like(t, -torch.inf)))

    out = {}
    for label, feed in feeds.items():
        inputs = [torch.from_numpy(feed[n]) for n in names]
        with torch.no_grad():
            e32 = core(*inputs).numpy()
            e1u = core(*[ulp(a) for a in inputs]).numpy()
            torch.set_default_dtype(torch.float64)  # constants made inside forward follow the default dtype
            try:
                e64 = core64(*[a.double() for a in inputs]).numpy()
            finally:
                torch.set_default_dtype(torch.float32)
        got = sess.run(None, {n: feed[n] for n in names})[0]
        norm = scale.normalize
        out[label] = {
            "onnx_vs_eager32": float(np.abs(norm(got) - norm(e32)).max()),
            "eager32_vs_eager64": float(np.abs(norm(e32) - norm(e64)).max()),
            "onnx_vs_eager64": float(np.abs(norm(got) - norm(e64)).max()),
            "eager_1ulp_input_vs_eager": float(np.abs(norm(e1u) - norm(e32)).max()),
        }
        print(label, " ".join(f"{k} {v:.2e}" for k, v in out[label].items()), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    os._exit(0)  # MuJoCo's renderer complains when torn down at interpreter exit


if __name__ == "__main__":
    main()
