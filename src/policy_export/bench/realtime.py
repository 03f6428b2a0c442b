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

``stress`` (``--stress N``) runs N busy processes beside both timed loops, as a robot's
computer runs its drivers, planners and loggers: the loop must keep its rate while the cores
are oversubscribed. Each spins until it is killed at the end of the run, its parent dies, or
its own deadline passes, whichever comes first.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.percentile import percentile
from policy_export.runtime import Backend, InlineWorker, Merge, PolicyClient, RealtimeClient

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
    "stress",
)
FRAME_POOL = 8
#: The instruction a language model's simulated robot is given (ignored by the others).
DEFAULT_TASK = "pick up the red cube and place it in the box"
#: A busy process: pure Python spinning (one core each), checking its deadline and its parent
#: every few milliseconds, so that it never outlives the benchmark.
BUSY_CODE = """
import os, time
end = time.monotonic() + {max_s}
parent = os.getppid()
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(20000):
        pass
"""


@contextlib.contextmanager
def busy_processes(n: int, max_s: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` CPU-bound processes for at most ``max_s`` seconds; always killed and reaped on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-S", "-c", BUSY_CODE.format(max_s=max_s)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait(timeout=30)


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
    task: str = DEFAULT_TASK
    #: Also compare the merges at one latency and find the fallback-free rate (virtual time).
    compare_merges: bool = True
    #: The latency of that comparison; None: the realtime run's median chunk latency.
    sim_latency_ms: float | None = None
    sim_steps: int = 300
    #: The eager policy's chunk latency (``policy-export bench``'s eager figure), for its fallback-free rate.
    eager_ms: float | None = None
    rtc_queue_threshold: int | None = None
    #: Busy processes beside the timed loops (``--stress``).
    stress: int = 0


class ToyRobot:
    """Joints drifting toward the commanded action, cameras returning raw uint8 frames."""

    def __init__(self, spec: PolicySpec, seed: int, task: str | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.spec = spec
        self.task = task
        self.state = rng.normal(0.0, 0.3, spec.state_dim).astype(np.float32)
        self.frames = {
            cam.key: [
                rng.integers(0, 256, (cam.shape[1], cam.shape[2], cam.shape[0]), dtype=np.uint8)
                for _ in range(FRAME_POOL)
            ]
            for cam in spec.cameras
        }
        self.t = 0

    def observe(self) -> dict[str, Any]:
        obs: dict[str, Any] = {self.spec.state_key: self.state.copy()}
        for key, pool in self.frames.items():
            obs[key] = pool[self.t % len(pool)]
        if self.task is not None:  # the instruction, as LeRobot's robot loop puts it in the batch
            obs["task"] = self.task
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
        "stress": cfg.stress,
        **rest,
    }
    return {k: row[k] for k in ROW_KEYS}


def run_realtime_bench(cfg: RealtimeBenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Both clients on the same robot; ``{"results": [sync row, realtime row]}`` (and the merges)."""
    say = progress or (lambda _: None)
    if cfg.stress:
        say(f"{cfg.stress} busy processes beside the loop")
    # Bounded by the children themselves too: both loops at worst a few times their nominal length.
    with busy_processes(cfg.stress, max_s=8 * cfg.steps / cfg.fps + 300):
        results, spec, merge = _timed_loops(cfg, say)
    return _compare(cfg, say, results, spec, merge)


def _timed_loops(
    cfg: RealtimeBenchConfig, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], PolicySpec, Merge]:
    results = []

    say("synchronous PolicyClient")
    with open_client(cfg) as sync:
        spec = sync.metadata.spec
        rtc_model = "rtc_prev_chunk" in _input_names(sync.backend)
        default = Merge.RTC if rtc_model else Merge.REPLACE
        merge = cfg.merge or (Merge.ENSEMBLE if spec.host.ensemble_coeff is not None else default)
        if merge is Merge.ENSEMBLE and spec.host.ensemble_coeff is None:
            from policy_export.errors import BadInputError

            raise BadInputError(
                f"--merge ensemble: {cfg.artifact} has no temporal ensembling coefficient (an action-queue model); "
                "use --merge replace"
            )
        timed = _Timed(sync.backend)
        sync.backend = timed
        robot = ToyRobot(spec, cfg.seed, cfg.task)
        sync.select_action(robot.observe())  # the episode's first action, with the runtime's warm-up
        timed.ms.clear()
        select_ms, missed = control_loop(sync.select_action, robot, cfg.fps, cfg.steps)
        # The synchronous client's merge is the model's own shim (queue, or ensembling at every step).
        sync_merge = "ensemble" if spec.host.ensemble_coeff is not None else "replace"
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
        robot = ToyRobot(spec, cfg.seed, cfg.task)
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
    return results, spec, merge


def _compare(
    cfg: RealtimeBenchConfig, say: Callable[[str], None], results: list[dict[str, Any]], spec: PolicySpec, merge: Merge
) -> dict[str, Any]:
    if not cfg.compare_merges:
        return {"results": results}

    # The merges side by side at one latency, and the fallback-free rate: virtual time, real chunks.
    latency_ms = cfg.sim_latency_ms if cfg.sim_latency_ms is not None else results[-1]["chunk_ms_p50"]
    latency_s = float(latency_ms or 0.0) / 1e3
    with open_client(cfg) as client:
        core = client.backend
        say(f"merges at {latency_s * 1e3:.1f} ms per chunk (virtual time, {cfg.sim_steps} steps)")
        merges = compare_merges(
            core, cfg.fps, cfg.sim_steps, latency_s, cfg.seed, rtc_queue_threshold=cfg.rtc_queue_threshold
        )
        say("highest control rate with 0 fallback ticks (virtual time)")
        robot = ToyRobot(spec, cfg.seed, cfg.task)
        chunk = client.predict_chunk(robot.observe())
        max_fps: dict[str, Any] = {
            "merge": merge.value,
            "ours": {"latency_ms": latency_s * 1e3, "fps": fallback_free_fps(core, merge, latency_s, chunk=chunk)},
        }
        if cfg.eager_ms is not None:
            max_fps["eager"] = {
                "latency_ms": cfg.eager_ms,
                "fps": fallback_free_fps(core, merge, cfg.eager_ms / 1e3, chunk=chunk),
            }
    return {"results": results, "merges": merges, "max_fps": max_fps}


def render_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    stress = max((r.get("stress", 0) for r in report["results"]), default=0)
    beside = f", {stress} busy processes beside the loop" if stress else ""
    table = Table(title=f"bench-realtime: a simulated robot loop, synchronous vs realtime client{beside}")
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


# -- merges compared at one latency, and the highest fallback-free control rate (virtual time) -----------

#: Keys of every ``merges`` row (``bench-realtime --json``).
MERGE_ROW_KEYS = (
    "merge",
    "latency_ms",
    "delay_steps",
    "steps",
    "chunks",
    "boundaries",
    "boundary_jump_max",
    "boundary_jump_mean",
    "within_jump_max",
    "switch_jump_max",
    "switch_jump_mean",
    "fallback_ticks",
)
#: ACT's default ``temporal_ensemble_coeff``: the ensemble merge for a model that does not ensemble itself.
DEFAULT_ENSEMBLE_COEFF = 0.01


class _VirtualLatency(Backend):
    """The real core, each call charged ``latency_s`` on the virtual worker's clock (not the wall clock)."""

    def __init__(self, inner: Backend, worker: InlineWorker, latency_s: float) -> None:
        self.inner, self.metadata, self.name, self.where = inner, inner.metadata, inner.name, inner.where
        self.path = getattr(inner, "path", None)  # where a language model's tokenizer file lies beside it
        self.worker, self.latency_s = worker, latency_s
        #: Every chunk computed, by the control step that asked for it (set by the loop: ``step``).
        self.step = 0
        self.chunks: dict[int, np.ndarray] = {}

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        out = self.inner.infer(feed)
        self.chunks[self.step] = np.asarray(out)[0]  # the virtual worker serves a request at the step it was asked
        self.worker.clock.advance(self.latency_s)
        return out

    def close(self) -> None:
        """The inner core is shared by every simulation: its owner closes it."""


class _Replay(Backend):
    """One real chunk, returned again at every call: the fallback-free rate depends on the timing alone."""

    def __init__(self, inner: Backend, chunk: np.ndarray) -> None:
        self.inner, self.metadata, self.name, self.where = inner, inner.metadata, inner.name, inner.where
        self.path = getattr(inner, "path", None)
        self.chunk = chunk

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.chunk

    def close(self) -> None:
        pass


def boundary_jumps(actions: np.ndarray, chunks: list[int | None]) -> tuple[list[float], list[float]]:
    """``max |a_t - a_{t-1}|`` over the action's dimensions at every step where the chunk the action came
    from changed (where chunks meet), and at every other step (within a chunk), as two lists."""
    at: list[float] = []
    within: list[float] = []
    for t in range(1, len(actions)):
        jump = float(np.abs(actions[t] - actions[t - 1]).max())
        (at if chunks[t] != chunks[t - 1] else within).append(jump)
    return at, within


def switch_jumps(chunks: list[int | None], computed: dict[int, np.ndarray]) -> list[float]:
    """At every step ``t`` where the action's chunk changed from ``old`` to ``new``: ``max |new[t] - old[t]|``,
    what switching chunks changed at that step (0 if the new chunk agreed with the old one there). Unlike
    the jump between consecutive actions, it does not count the motion within a chunk."""
    out = []
    for t in range(1, len(chunks)):
        old, new = chunks[t - 1], chunks[t]
        if old is None or new is None or old == new or old not in computed or new not in computed:
            continue
        a, b = computed[old], computed[new]
        if t - old < len(a) and t - new < len(b):
            out.append(float(np.abs(b[t - new] - a[t - old]).max()))
    return out


def simulate(
    core: Backend,
    merge: Merge,
    fps: float,
    steps: int,
    latency_s: float,
    seed: int,
    ensemble_coeff: float | None = None,
    rtc_queue_threshold: int | None = None,
    task: str | None = DEFAULT_TASK,
    tokenizer: Any = None,
) -> tuple[np.ndarray, list[int | None], dict[str, Any]]:
    """One episode of the toy robot, closed loop, with every chunk taking ``latency_s`` in virtual time.

    The chunks are the real core's; only the clock is simulated, so that every merge sees the same
    latency exactly and the figures do not depend on the machine's load. The episode's first chunk
    is taken at once (both clients wait for it by design)."""
    from policy_export.runtime import InlineWorker, ManualClock

    worker, clock = InlineWorker(), ManualClock()
    timed = _VirtualLatency(core, worker, latency_s)
    client = PolicyClient(timed, seed=seed, tokenizer=tokenizer)
    options: dict[str, Any] = {"merge": merge}
    if merge is Merge.RTC and rtc_queue_threshold is not None:
        options["rtc_queue_threshold"] = rtc_queue_threshold
    rt = RealtimeClient(client, fps, clock=clock, worker=worker, ensemble_coeff=ensemble_coeff, **options)
    robot = ToyRobot(core.metadata.spec, seed, task)
    actions, chunks = [], []
    for t in range(steps):
        clock.set(t / fps)
        timed.step = t
        action = np.asarray(rt.select_action(robot.observe()))[0]
        robot.act(action)
        actions.append(action)
        chunks.append(None if rt.last_tick is None else rt.last_tick.chunk)
        if t == 0:
            worker.clock.set(0.0)  # the first chunk waited for: latency counts from here on
    stats = rt.stats()
    stats["computed_chunks"] = timed.chunks
    return np.stack(actions), chunks, stats


def compare_merges(
    core: Backend,
    fps: float,
    steps: int,
    latency_s: float,
    seed: int,
    ensemble_coeff: float | None = None,
    rtc_queue_threshold: int | None = None,
    task: str | None = DEFAULT_TASK,
    tokenizer: Any = None,
) -> list[dict[str, Any]]:
    """Every merge the model allows (rtc when its core takes RTC inputs, replace, ensemble) on the same
    robot, observations and latency: the jump where chunks meet, beside the largest step within a chunk."""
    spec = core.metadata.spec
    coeff = ensemble_coeff if ensemble_coeff is not None else spec.host.ensemble_coeff or DEFAULT_ENSEMBLE_COEFF
    merges = [Merge.REPLACE, Merge.ENSEMBLE]
    if "rtc_prev_chunk" in _input_names(core):
        merges.insert(0, Merge.RTC)
    rows = []
    for merge in merges:
        actions, chunks, stats = simulate(
            core,
            merge,
            fps,
            steps,
            latency_s,
            seed,
            ensemble_coeff=coeff if merge is Merge.ENSEMBLE else None,
            rtc_queue_threshold=rtc_queue_threshold,
            task=task,
            tokenizer=tokenizer,
        )
        at, within = boundary_jumps(actions[1:], chunks[1:])  # from the first chunk's end of wait on
        switch = switch_jumps(chunks, stats["computed_chunks"]) if merge is not Merge.ENSEMBLE else []
        rows.append(
            {
                "merge": merge.value,
                "latency_ms": latency_s * 1e3,
                "delay_steps": math.ceil(latency_s * fps - 1e-9),
                "steps": steps,
                "chunks": stats["chunks_received"],
                "boundaries": len(at),
                "boundary_jump_max": max(at) if at else None,
                "boundary_jump_mean": float(np.mean(at)) if at else None,
                "within_jump_max": max(within) if within else None,
                "switch_jump_max": max(switch) if switch else None,
                "switch_jump_mean": float(np.mean(switch)) if switch else None,
                "fallback_ticks": stats["fallback_ticks"],
            }
        )
    return [{k: r[k] for k in MERGE_ROW_KEYS} for r in rows]


def _input_names(core: Backend) -> list[str]:
    """The core's input names, as its model declares them."""
    return list(core.metadata.spec.input_names)


def fallback_free_fps(
    core: Backend,
    merge: Merge,
    latency_s: float,
    *,
    chunk: np.ndarray,
    lo: float = 0.5,
    hi: float = 1000.0,
    task: str | None = DEFAULT_TASK,
    tokenizer: Any = None,
) -> float:
    """The highest control rate at which the realtime client, with chunks taking ``latency_s``, runs
    20 chunks' worth of steps with 0 fallback ticks (virtual time, a replayed real chunk): the highest
    of 1000 Hz / 1.5^k that runs clean, refined by bisection to 0.1 %."""
    from policy_export.runtime import InlineWorker, ManualClock

    spec = core.metadata.spec
    replay = _Replay(core, chunk)

    def clean(fps: float) -> bool:
        worker, clock = InlineWorker(), ManualClock()
        client = PolicyClient(_VirtualLatency(replay, worker, latency_s), tokenizer=tokenizer)
        coeff = DEFAULT_ENSEMBLE_COEFF if merge is Merge.ENSEMBLE and spec.host.ensemble_coeff is None else None
        rt = RealtimeClient(client, fps, clock=clock, worker=worker, merge=merge, ensemble_coeff=coeff)
        steps = min(20_000, int(20 * max(spec.chunk_size, latency_s * fps)) + 50)
        robot = ToyRobot(spec, 0, task)
        for t in range(steps):
            clock.set(t / fps)
            rt.select_action(robot.observe())
            if t == 0:
                worker.clock.set(0.0)
        return int(rt.stats()["fallback_ticks"]) == 0

    # From the top down (a very slow loop fails too, on max_action_age_s), then bisect the last step.
    fps = hi
    while not clean(fps):
        fps /= 1.5
        if fps < lo:
            return 0.0
    good, bad = fps, fps * 1.5
    for _ in range(40):
        if bad / good < 1.001:
            break
        mid = math.sqrt(good * bad)
        good, bad = (mid, bad) if clean(mid) else (good, mid)
    return good


def render_merges(report: dict[str, Any]) -> Any:
    """The merges at one latency and the fallback-free rates, or None when they were not run."""
    from rich.table import Table

    if "merges" not in report:
        return None

    def num(value: float | None, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    rows = report["merges"]
    latency = rows[0]["latency_ms"] if rows else 0.0
    table = Table(
        title=f"where chunks meet: max |a_t - a_(t-1)| at {latency:.1f} ms per chunk "
        f"({rows[0]['delay_steps'] if rows else 0} control steps), virtual time, same robot and observations"
    )
    for col in (
        "merge",
        "chunks",
        "boundaries",
        "boundary jump max",
        "boundary jump mean",
        "within-chunk max",
        "fallback",
    ):
        table.add_column(col, justify="left" if col == "merge" else "right")
    for r in rows:
        table.add_row(
            r["merge"],
            str(r["chunks"]),
            str(r["boundaries"]),
            num(r["boundary_jump_max"]),
            num(r["boundary_jump_mean"]),
            num(r["within_jump_max"]),
            f"{num(r['switch_jump_max'])} / {num(r['switch_jump_mean'])}",
            str(r["fallback_ticks"]),
        )
    fps = report["max_fps"]
    table.caption = f"highest control rate with 0 fallback ticks (merge {fps['merge']}): " + ", ".join(
        f"{who} {fps[who]['fps']:.1f} Hz at {fps[who]['latency_ms']:.0f} ms per chunk"
        for who in ("ours", "eager")
        if who in fps
    )
    return table
