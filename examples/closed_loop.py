"""Closed loop: a toy robot driven by an exported ACT policy through PolicyClient.

The robot loop is what a LeRobot user already has: read an observation dict, ask the policy
for an action, send it, repeat, ``reset()`` at a new episode. Only the policy object changes:
``PolicyClient`` runs the exported, stateless core (here in-process with ONNX Runtime, or on
a Triton server with ``--triton-url``) and rebuilds LeRobot's action queue / temporal
ensembling on this host. Needs numpy + onnxruntime (+ tritonclient for Triton); no torch.

    policy-export demo --out-dir demo-output                    # a checkpoint + act_demo.onnx
    python examples/closed_loop.py --artifact demo-output/act_demo.onnx

    # the same episode against Triton (see examples/README.md to serve the model):
    python examples/closed_loop.py --artifact demo-output/act_demo.onnx --triton-url 127.0.0.1:8001 --model act

    # a real-time loop at 30 Hz: the model runs on a worker thread, select_action never waits for it
    python examples/closed_loop.py --artifact demo-output/act_demo.onnx --realtime --fps 30 --steps 300
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from policy_export.errors import PolicyExportError
from policy_export.runtime import PolicyClient, RealtimeClient


class ToyRobot:
    """A few robots whose joints drift toward the commanded action, filmed by cameras showing noise.

    Frames are raw uint8 HWC, as a camera driver hands them to LeRobot's robot loop; the client
    converts them to whatever the artifact takes (float CHW, or the frames themselves).
    """

    def __init__(self, client: PolicyClient, robots: int, seed: int) -> None:
        spec = client.metadata.spec
        self.spec, self.robots = spec, robots
        self.rng = np.random.default_rng(seed)
        self.state = self.rng.normal(0.0, 0.3, (robots, spec.state_dim)).astype(np.float32)

    def observe(self) -> dict[str, np.ndarray]:
        obs = {self.spec.state_key: self.state.copy()}
        for cam in self.spec.cameras:
            c, h, w = cam.shape
            obs[cam.key] = self.rng.integers(0, 256, (self.robots, h, w, c), dtype=np.uint8)
        if self.robots == 1:  # one robot: no batch axis, exactly what LeRobot's loop holds
            obs = {k: v[0] for k, v in obs.items()}
        return obs

    def act(self, action: np.ndarray) -> None:
        n = min(self.spec.state_dim, action.shape[-1])
        self.state[:, :n] += 0.2 * (action[:, :n] - self.state[:, :n])


def episode(client: PolicyClient, steps: int, robots: int, seed: int, label: str) -> np.ndarray:
    robot = ToyRobot(client, robots, seed)
    client.reset()  # new episode: empty queues / ensembles, like policy.reset()
    actions, times = [], []
    print(f"\n{label}: {client}")
    for t in range(steps):
        obs = robot.observe()
        t0 = time.perf_counter()
        action = client.select_action(obs)  # [robots, action_dim], robot units
        times.append((time.perf_counter() - t0) * 1e3)
        robot.act(action)
        actions.append(action)
        if t < 3 or t % max(1, steps // 8) == 0 or t == steps - 1:
            shown = np.array2string(action[0, :6], precision=3, suppress_small=True)
            print(f"  step {t:3d}  robot 0 action[:6] {shown}  ({times[-1]:.3f} ms)")
    print(f"  median step {np.median(times):.3f} ms, slowest {max(times):.3f} ms (the steps that ran the core)")
    return np.stack(actions)


def realtime_episode(client: RealtimeClient, steps: int, fps: float, seed: int) -> None:
    """The robot loop at ``fps`` as a robot runs it: observe, act, wait for the next period."""
    robot = ToyRobot(client.client, 1, seed)
    print(f"\nreal-time loop: {client}")
    period, times = 1.0 / fps, []
    next_tick = time.perf_counter()
    for t in range(steps):
        obs = robot.observe()
        t0 = time.perf_counter()
        action = client.select_action(obs)  # this tick's action from the buffer; never waits for the model
        times.append((time.perf_counter() - t0) * 1e3)
        robot.act(action)
        tick = client.last_tick
        if t < 3 or t % max(1, steps // 8) == 0 or t == steps - 1:
            source = (
                f"fallback {tick.fallback}" if tick.fallback else f"chunk of step {tick.chunk}, action {tick.index}"
            )
            print(f"  step {t:3d}  {tick.state:<12} {source}  ({times[-1]:.3f} ms)")
        next_tick += period
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    stats = client.stats()
    print(
        f"  select_action median {np.median(times):.3f} ms, slowest {max(times):.3f} ms (the first waits for the first chunk); "
        f"chunks {stats['chunks_received']}, chunk p50 {stats['chunk_ms_p50']:.0f} ms, "
        f"fallback ticks {stats['fallback_ticks']}, skipped for latency {stats['actions_skipped_latency']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True, help="exported policy (.onnx, .pt, .plan)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--robots", type=int, default=1, help="robots served together (batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--triton-url", help="host:port of a Triton server serving the same artifact")
    parser.add_argument("--model", default="act", help="model name in the Triton repository")
    parser.add_argument("--protocol", choices=["grpc", "http"], help="default: the URL's scheme, else grpc")
    parser.add_argument("--realtime", action="store_true", help="drive one robot at --fps through RealtimeClient")
    parser.add_argument("--fps", type=float, default=30.0, help="control rate of the real-time loop (Hz)")
    parser.add_argument("--fallback", default="hold", help="real-time fallback: hold | repeat_last | zero")
    args = parser.parse_args()

    if args.realtime:
        if args.triton_url:
            rt = RealtimeClient.from_triton(
                args.triton_url, args.model, protocol=args.protocol, fps=args.fps, fallback=args.fallback
            )
        else:
            rt = PolicyClient.from_artifact(args.artifact).realtime(fps=args.fps, fallback=args.fallback)
        with rt:
            realtime_episode(rt, args.steps, args.fps, args.seed)
        return

    with PolicyClient.from_artifact(args.artifact) as local:
        ref = episode(local, args.steps, args.robots, args.seed, "local ONNX Runtime")
    if args.triton_url:
        with PolicyClient.from_triton(args.triton_url, args.model, protocol=args.protocol) as remote:
            out = episode(remote, args.steps, args.robots, args.seed, f"Triton {remote.backend.protocol}")
        print(f"\nlocal vs Triton, same episode: max |difference| {np.abs(out - ref).max():.3g}")


if __name__ == "__main__":
    try:
        main()
    except PolicyExportError as exc:  # a wrong path, a server that is down: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
