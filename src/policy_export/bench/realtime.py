"""``bench-realtime``: a simulated robot at ``fps``, driven by ``PolicyClient`` then ``RealtimeClient``.

Why: the synchronous client runs the core on the robot loop's thread at every chunk boundary
(with temporal ensembling: every step), so the loop stalls for one inference; the realtime
client runs it on a worker and never waits. This measures both on the same model, machine
and observations, as a robot loop sees them.

The loop is a LeRobot-style control loop: each tick observes, calls ``select_action``,
applies the action, and waits for the next period; a tick that overran starts the next one
at once (the schedule re-anchors, as ``busy_wait(dt - elapsed)`` loops do). A **missed
tick** is a tick whose ``select_action`` returned after that tick's deadline (its start plus
one period). The episode's first action is taken before the timed steps: both clients wait
for the first chunk there (the realtime client by design: there is no safe action before the
model has spoken), and it includes each runtime's warm-up.

Observations are like ``examples/closed_loop.py``'s toy robot (raw uint8 camera frames, a
state drifting toward the commanded action), from a small pool of pre-drawn frames so that
drawing noise does not eat the loop's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.percentile import percentile
from policy_export.runtime import Backend, Merge, PolicyClient, RealtimeClient

if TYPE_CHECKING:
    from policy_export.spec import PolicySpec

#: Keys of every result row, in this order (the JSON schema of ``bench-realtime --json``).
ROW_KEYS = (
    "client",
    "merge",
    "fps",
    "steps",
    "missed_ticks",
    "select_ms_p50",
    "select_ms_p99",
    "select_ms_max",
    "chunk_ms_p50",
    "chunk_ms_p99",
    "fallback_ticks",
    "stale_dropped",
    "streaming_fraction",
)
FRAME_POOL = 8


@dataclass(frozen=True)
class RealtimeBenchConfig:
    artifact: Path
    fps: float = 30.0
    steps: int = 3000
    merge: Merge | None = None  # None: ensemble when the model ensembles, else replace
    triton_url: str | None = None
    model: str | None = None
    protocol: str | None = None
    seed: int = 0


class ToyRobot:
    """Joints drifting toward the commanded action, cameras returning raw uint8 frames."""

    def __init__(self, spec: PolicySpec, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.spec = spec
        self.state = rng.normal(0.0, 0.3, spec.state_dim).astype(np.float32)
        self.frames = {
            cam.key: [
                rng.integers(0, 256, (cam.shape[1], cam.shape[2], cam.shape[0]), dtype=np.uint8)
                for _ in range(FRAME_POOL)
            ]
            for cam in spec.cameras
        }
        self.t = 0

    def observe(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {self.spec.state_key: self.state.copy()}
        for key, pool in self.frames.items():
            obs[key] = pool[self.t % len(pool)]
        self.t += 1
        return obs

    def act(self, action: np.ndarray) -> None:
        n = min(self.spec.state_dim, action.shape[-1])
        self.state[:n] += 0.2 * (np.asarray(action).reshape(-1)[:n] - self.state[:n])


class _Timed(Backend):
    """The synchronous client's backend, with each core call timed (the chunk latency)."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.metadata, self.name, self.where = inner, inner.metadata, inner.name, inner.where
        self.ms: list[float] = []

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.infer(feed)
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return out

    def close(self) -> None:
        self.inner.close()


def open_client(cfg: RealtimeBenchConfig) -> PolicyClient:
    if cfg.triton_url:
        return PolicyClient.from_triton(cfg.triton_url, cfg.model or "", protocol=cfg.protocol)
    return PolicyClient.from_artifact(cfg.artifact)


def control_loop(
    select: Callable[[dict[str, np.ndarray]], Any], robot: ToyRobot, fps: float, steps: int
) -> tuple[list[float], int]:
    """``steps`` paced ticks; returns each ``select_action``'s milliseconds and the missed ticks."""
    period = 1.0 / fps
    select_ms: list[float] = []
    missed = 0
    tick_start = time.perf_counter()
    for _ in range(steps):
        deadline = tick_start + period
        obs = robot.observe()
        t0 = time.perf_counter()
        action = select(obs)
        t1 = time.perf_counter()
        select_ms.append((t1 - t0) * 1e3)
        missed += t1 > deadline
        robot.act(np.asarray(action))
        now = time.perf_counter()
        if now < deadline:
            time.sleep(deadline - now)  # the loop's pacing
            tick_start = deadline
        else:
            tick_start = now  # overran: the next tick starts at once
    return select_ms, missed


def _row(
    client: str, merge: str, cfg: RealtimeBenchConfig, select_ms: list[float], missed: int, **rest: object
) -> dict:
    row = {
        "client": client,
        "merge": merge,
        "fps": cfg.fps,
        "steps": cfg.steps,
        "missed_ticks": missed,
        "select_ms_p50": percentile(select_ms, 50),
        "select_ms_p99": percentile(select_ms, 99),
        "select_ms_max": float(max(select_ms)),
        **rest,
    }
    return {k: row[k] for k in ROW_KEYS}


def run_realtime_bench(cfg: RealtimeBenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both clients on the same robot; ``{"results": [sync row, realtime row]}``."""
    say = progress or (lambda _: None)
    results = []

    say("synchronous PolicyClient")
    with open_client(cfg) as sync:
        spec = sync.metadata.spec
        merge = cfg.merge or (Merge.ENSEMBLE if spec.temporal_ensemble_coeff is not None else Merge.REPLACE)
        if merge is Merge.ENSEMBLE and spec.temporal_ensemble_coeff is None:
            from policy_export.errors import BadInputError

            raise BadInputError(
                f"--merge ensemble: {cfg.artifact} has no temporal ensembling coefficient (an action-queue model); "
                "use --merge replace"
            )
        timed = _Timed(sync.backend)
        sync.backend = timed
        robot = ToyRobot(spec, cfg.seed)
        sync.select_action(robot.observe())  # the episode's first action, with the runtime's warm-up
        timed.ms.clear()
        select_ms, missed = control_loop(sync.select_action, robot, cfg.fps, cfg.steps)
        # The synchronous client's merge is the model's own shim (queue, or ensembling at every step).
        sync_merge = "ensemble" if spec.temporal_ensemble_coeff is not None else "replace"
        results.append(
            _row(
                "sync",
                sync_merge,
                cfg,
                select_ms,
                missed,
                chunk_ms_p50=percentile(timed.ms, 50) if timed.ms else None,
                chunk_ms_p99=percentile(timed.ms, 99) if timed.ms else None,
                fallback_ticks=0,
                stale_dropped=0,
                streaming_fraction=None,
            )
        )

    say(f"RealtimeClient (merge={merge.value})")
    with RealtimeClient(open_client(cfg), cfg.fps, merge=merge) as rt:
        robot = ToyRobot(spec, cfg.seed)
        rt.select_action(robot.observe())  # waits for the first chunk, by design
        before = rt.stats()
        select_ms, missed = control_loop(rt.select_action, robot, cfg.fps, cfg.steps)
        stats = rt.stats()
        time_in = {k: stats["time_in_state_s"][k] - before["time_in_state_s"][k] for k in stats["time_in_state_s"]}
        total = sum(time_in.values())
        results.append(
            _row(
                "realtime",
                merge.value,
                cfg,
                select_ms,
                missed,
                chunk_ms_p50=stats["chunk_ms_p50"],
                chunk_ms_p99=stats["chunk_ms_p99"],
                fallback_ticks=stats["fallback_ticks"] - before["fallback_ticks"],
                stale_dropped=stats["stale_dropped"] - before["stale_dropped"],
                streaming_fraction=time_in["STREAMING"] / total if total > 0 else 0.0,
            )
        )
    return {"results": results}


def render_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title="bench-realtime: a simulated robot loop, synchronous vs realtime client")
    for col in (
        "client",
        "merge",
        "fps",
        "steps",
        "missed",
        "select p50/p99/max ms",
        "chunk p50/p99 ms",
        "fallback",
        "stale",
        "streaming",
    ):
        table.add_column(col, justify="left" if col in ("client", "merge") else "right")
    for r in report["results"]:
        table.add_row(
            r["client"],
            r["merge"],
            f"{r['fps']:g}",
            str(r["steps"]),
            str(r["missed_ticks"]),
            f"{ms(r['select_ms_p50'])} / {ms(r['select_ms_p99'])} / {ms(r['select_ms_max'])}",
            f"{ms(r['chunk_ms_p50'])} / {ms(r['chunk_ms_p99'])}",
            str(r["fallback_ticks"]),
            str(r["stale_dropped"]),
            "-" if r["streaming_fraction"] is None else f"{100 * r['streaming_fraction']:.1f}%",
        )
    return table
