"""How many robots one Triton server holds: simulated robots against a real server.

A benchmark, not a test: it measures, prints a table and writes JSON; it asserts nothing
about speed. For each robot count N (and dynamic batching on and off, when it starts the
server itself) it runs N robot processes at ``fps`` for ``duration`` seconds and records
missed and fallback ticks, chunk latency, and what Triton's own statistics say happened on
the server over exactly that run: requests, executions (so the average executed batch),
queue time and compute time.

The capacity figure is the largest N with no fallback tick. Beside it stands LeRobot's rule
of thumb ``N ~ 0.8 / (request rate x inference time)``, computed from this run's measured
per-robot request rate and the server's compute time per request, so a disagreement says
something about the client, the network or queueing rather than about the arithmetic.

``sweep`` runs N unpaced clients instead (requests back to back): throughput against
concurrency, the curve perf_analyzer draws, measured with our own client.

Load goes to loopback servers this module starts, or to the ``--triton-url`` replicas given; every
run is bounded in time, and every process it starts is stopped on any exit.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.errors import BadInputError, UnavailableError
from policy_export.fleet.robot import RobotPlan, run_robot
from policy_export.fleet.servers import (
    check_replicas,
    counter_delta,
    model_dir,
    repo_tokenizer,
    served_batching,
    server_counters,
    started_server,
    variant_repo,
)
from policy_export.percentile import percentile

if TYPE_CHECKING:
    from multiprocessing.queues import Queue


RULE_OF_THUMB_UTILISATION = 0.8
#: Machine CPU busy fraction at which we call the CPU saturated.
CPU_SATURATED = 0.9


@dataclass(frozen=True)
class FleetConfig:
    model: str
    robots: tuple[int, ...] = (1, 2, 4, 8)
    fps: float = 30.0
    duration_s: float = 30.0
    repo: Path | None = None
    urls: tuple[str, ...] = ()
    batching: tuple[bool, ...] = (True, False)
    sweep: tuple[int, ...] = ()
    timeout_s: float = 5.0
    venv: Path | None = None
    seed: int = 0
    realtime: bool = True  # robots drive a RealtimeClient; False: the synchronous PolicyClient
    task: str | None = None  # a language model's instruction
    tokenizer: Path | None = None  # its tokenizer file (with --repo: found in the repository)
    #: With several ``urls``: every row once against the first replica alone, then against all of them.
    replica_scaling: bool = False

    def __post_init__(self) -> None:
        if not self.urls and self.repo is None:
            raise BadInputError(
                "give --repo DIR (a server is started for the run) or --triton-url host:port[,host:port]"
            )
        counts = self.sweep or self.robots
        if not counts or any(not isinstance(n, int) or n < 1 for n in counts):
            raise BadInputError(f"robot counts must be positive integers, got {list(counts)}")
        if not self.sweep and not self.fps > 0:
            raise BadInputError(f"--fps must be > 0, got {self.fps}")
        if not 0 < self.duration_s <= 3600:
            raise BadInputError(f"--duration must be in (0, 3600] seconds, got {self.duration_s}")
        if max(counts) > 256:
            raise BadInputError(f"at most 256 robots per run (one process each), got {max(counts)}")


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


# -- one run of N robots ---------------------------------------------------------------------
def run_robots(
    n: int,
    urls: tuple[str, ...],
    cfg: FleetConfig,
    fps: float,
    during: Callable[[], None] | None = None,
    expect: str | None = None,
    per_robot: Callable[[int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """N robot processes; returns each robot's result. ``during`` runs once all have started
    (the failover drill kills a replica there, the upgrade drill rolls a version out);
    ``per_robot(i)`` gives robot i's extra plan fields (its version policy, reference chunks)."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding gRPC channels
    results = ctx.Queue()
    go = ctx.Event()
    procs = []
    for i in range(n):
        plan = RobotPlan(
            i,
            urls,
            cfg.model,
            fps,
            cfg.duration_s,
            cfg.timeout_s,
            cfg.seed * 1000 + i,
            expect,
            cfg.realtime,
            task=cfg.task,
            tokenizer=None if cfg.tokenizer is None else str(cfg.tokenizer),
            **(per_robot(i) if per_robot is not None else {}),
        )
        proc = ctx.Process(target=run_robot, args=(plan, results, go), daemon=True, name=f"robot-{i}")
        proc.start()
        procs.append(proc)
    try:
        ready = 0
        errors: list[str] = []
        done: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120 + 2 * n
        while ready + len(errors) < n:
            kind, index, payload = _get(results, deadline)
            if kind == "ready":
                ready += 1
            else:
                errors.append(f"robot {index}: {payload}")
        if errors:
            raise UnavailableError(errors[0])
        go.set()
        if during is not None:
            during()
        deadline = time.monotonic() + cfg.duration_s + 4 * cfg.timeout_s + 60
        while len(done) + len(errors) < n:
            kind, index, payload = _get(results, deadline)
            if kind == "done":
                done.append(payload)
            else:
                errors.append(f"robot {index}: {payload}")
        if errors:
            raise UnavailableError(errors[0])
        return sorted(done, key=lambda r: r["robot"])
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def _get(results: Queue[tuple[str, int, Any]], deadline: float) -> tuple[str, int, Any]:  # Any: a payload per kind
    import queue

    try:
        return results.get(timeout=max(0.1, deadline - time.monotonic()))
    except queue.Empty:
        raise UnavailableError("robots did not report in time (is the server overloaded or gone?)") from None


def measure_row(
    n: int,
    urls: tuple[str, ...],
    cfg: FleetConfig,
    batching: bool | None,
    unpaced: bool,
    during: Callable[[], None] | None = None,
    expect: str | None = None,
    per_robot: Callable[[int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    before = server_counters(urls, cfg.model, cfg.timeout_s)
    cpu0, t0 = _cpu_times(), time.monotonic()
    robots = run_robots(n, urls, cfg, 0.0 if unpaced else cfg.fps, during, expect, per_robot)
    wall = time.monotonic() - t0
    cpu1 = _cpu_times()
    # Triton updates statistics just after the response is sent: let the last ones land (bounded).
    requests = sum(r["requests"] - r["failed_requests"] for r in robots)
    deadline = time.monotonic() + 3
    after = server_counters(urls, cfg.model, cfg.timeout_s)
    while counter_delta(before, after)[0]["success"] < requests and time.monotonic() < deadline:
        time.sleep(0.05)
        after = server_counters(urls, cfg.model, cfg.timeout_s)
    d, counted = counter_delta(before, after)
    latencies = [x for r in robots for x in r["latencies_ms"]]
    success = max(d["success"], 1.0)
    cpu_busy = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]) if cpu1[1] > cpu0[1] else float("nan")
    row: dict[str, Any] = {
        "mode": "sweep" if unpaced else "robots",
        "robots": n,
        "batching": batching,
        "fps": None if unpaced else cfg.fps,
        "duration_s": cfg.duration_s,
        "requests": requests,
        "failed_requests": sum(r["failed_requests"] for r in robots),
        # Each client's completed requests over its own active time (an unpaced client's last
        # request ends after the nominal duration; a 1 s inference over 3 s would read 33% high).
        "throughput_infer_per_s": sum((r["requests"] - r["failed_requests"]) / r["elapsed_s"] for r in robots),
        "request_rate_per_robot_hz": sum((r["requests"] - r["failed_requests"]) / r["elapsed_s"] for r in robots) / n,
        "chunk_p50_ms": percentile(latencies, 50),
        "chunk_p99_ms": percentile(latencies, 99),
        "chunk_mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "server_requests": int(d["success"]),
        "server_executions": int(d["executions"]),
        "avg_batch_size": d["inferences"] / d["executions"] if d["executions"] else float("nan"),
        "server_queue_ms_per_request": d["queue_ns"] / success / 1e6,
        "server_compute_ms_per_request": d["compute_ns"] / success / 1e6,
        "server_compute_ms_per_execution": d["exec_compute_ns"] / max(d["executions"], 1.0) / 1e6,
        "server_busy_fraction": d["exec_compute_ns"] / 1e9 / cfg.duration_s,
        # Replicas whose statistics cover the run (one killed mid-run has none at the end).
        "replicas_counted": counted,
        "machine_cpu_busy_fraction": cpu_busy,
        "wall_s": wall,
    }
    if not unpaced:
        for key in ("ticks", "missed_ticks", "fallback_ticks", "failovers", "wrong_model_chunks", "refused_replicas"):
            row[key] = sum(r[key] for r in robots)
        row["replicas_used"] = sorted({u for r in robots for u in r["replicas_used"]})
        row["per_robot"] = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in robots]
        keys = ("chunks_received", "actions_skipped_latency", "stale_dropped", "reconnects", "failures")
        row["realtime"] = {k: sum(r["realtime"].get(k, 0) for r in robots) for k in keys} if cfg.realtime else None
    return row


# -- the summary ---------------------------------------------------------------------------
def limiter(row: dict[str, Any]) -> str:
    """What bounds capacity at this row: the machine's CPU, the server's queue, or the per-request
    overhead outside the server's compute (client, gRPC, serialisation)."""
    cpu = row["machine_cpu_busy_fraction"]
    queue, compute = row["server_queue_ms_per_request"], row["server_compute_ms_per_request"]
    outside = row["chunk_p50_ms"] - queue - compute
    if cpu == cpu and cpu >= CPU_SATURATED:
        return f"CPU saturated (machine {cpu:.0%} busy)"
    if queue > compute:
        return f"queue time ({queue:.1f} ms queued vs {compute:.1f} ms compute per request)"
    if outside > compute:
        return f"per-request overhead ({outside:.1f} ms outside the server's {compute:.1f} ms compute)"
    return (
        f"server compute ({compute:.1f} ms per request, instance busy {row['server_busy_fraction']:.0%}, "
        f"machine {cpu:.0%} busy)"
    )


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per batching mode (and replica count): measured capacity, the rule of thumb, and what limits it."""
    out = []
    groups = sorted(
        {(r.get("replicas", 1), r["batching"]) for r in rows if r["mode"] == "robots"},
        key=lambda g: (g[0], g[1] is not True),
    )
    for replicas, batching in groups:
        mine = sorted(
            (
                r
                for r in rows
                if r["mode"] == "robots" and r["batching"] == batching and r.get("replicas", 1) == replicas
            ),
            key=lambda r: r["robots"],
        )
        if not mine:
            continue
        ok = [r["robots"] for r in mine if r["fallback_ticks"] == 0]
        capacity = max(ok) if ok else 0
        base = mine[0]  # the lightest load: the cleanest figures for rate and inference time
        rate, t_inf = base["request_rate_per_robot_hz"], base["server_compute_ms_per_request"] / 1e3
        rule = RULE_OF_THUMB_UTILISATION / (rate * t_inf) if rate > 0 and t_inf > 0 else float("nan")
        failing = [r for r in mine if r["fallback_ticks"] > 0]
        at = failing[0] if failing else mine[-1]
        out.append(
            {
                "batching": batching,
                "replicas": replicas,
                "capacity_robots": capacity,
                "capacity_is_lower_bound": capacity == mine[-1]["robots"],
                "rule_of_thumb_robots": rule,
                "request_rate_per_robot_hz": rate,
                "inference_ms": t_inf * 1e3,
                "limited_by": limiter(at),
                "limiter_measured_at_robots": at["robots"],
            }
        )
    return out


def scaling(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Capacity with 1 replica vs all of them: the peak throughput of each (sweep rows) or the robot
    capacity (paced rows), their ratio, and what limits the larger fleet at its peak."""
    counts = sorted({r.get("replicas", 1) for r in rows})
    if len(counts) < 2:
        return None
    one, many = counts[0], counts[-1]

    def peak(k: int) -> dict[str, Any]:
        mine = [r for r in rows if r.get("replicas", 1) == k]
        if mine[0]["mode"] == "sweep":
            return max(mine, key=lambda r: r["throughput_infer_per_s"])
        clean = [r for r in mine if r["fallback_ticks"] == 0]
        return max(clean or mine, key=lambda r: (r["fallback_ticks"] == 0, r["robots"]))

    a, b = peak(one), peak(many)
    key = "throughput_infer_per_s" if a["mode"] == "sweep" else "robots"
    ratio = b[key] / a[key] if a[key] else float("nan")
    return {
        "measure": "peak throughput (infer/s)" if key != "robots" else "robots with no fallback tick",
        "replicas": [one, many],
        "values": [a[key], b[key]],
        "ratio": ratio,
        "limited_by": limiter(b),
        "machine_cpu_busy_at_peak": [a["machine_cpu_busy_fraction"], b["machine_cpu_busy_fraction"]],
        "cpu_count": os.cpu_count(),
    }


# -- the whole benchmark ---------------------------------------------------------------------
def run_fleet(
    cfg: FleetConfig,
    progress: Callable[[str], None] = lambda _m: None,
    during: Callable[[int, tuple[str, ...]], None] | None = None,
) -> dict[str, Any]:
    """Every (N, batching) row, plus the summary. ``during(n, urls)`` (tests: the failover drill)
    runs once the robots of each row have started."""
    unpaced = bool(cfg.sweep)
    counts = cfg.sweep or cfg.robots
    rows: list[dict[str, Any]] = []

    def each(urls: tuple[str, ...], batching: bool | None, expect: str | None = None, scaling: bool = False) -> None:
        # Replica scaling: the 1-replica and all-replica rows of one count back to back, so a machine whose
        # background load drifts (a shared one) weighs on both sides of the ratio alike.
        fleets = [urls[:1], urls] if scaling else [urls]
        for n in counts:
            for group in fleets:
                label = "on" if batching else "off" if batching is not None else "as served"
                progress(f"{'sweep' if unpaced else 'robots'} N={n}, batching {label}, replicas {len(group)}")
                hook = (lambda n=n, group=group: during(n, group)) if during else None
                rows.append({**measure_row(n, group, cfg, batching, unpaced, hook, expect), "replicas": len(group)})

    if cfg.urls:
        expect = check_replicas(cfg.urls, cfg.model, cfg.timeout_s, cfg.tokenizer)
        served = served_batching(cfg.urls[0], cfg.model, cfg.timeout_s)
        each(cfg.urls, served, expect, scaling=cfg.replica_scaling and len(cfg.urls) > 1)
    else:
        from policy_export.signals import signals_as_interrupt

        assert cfg.repo is not None
        model_dir(cfg.repo, cfg.model)
        if cfg.tokenizer is None:  # a language model's, as triton-repo copied it
            cfg = dataclasses.replace(cfg, tokenizer=repo_tokenizer(cfg.repo, cfg.model))
        assert cfg.repo is not None
        # SIGTERM anywhere in the run (not only while a server is up) unwinds like Ctrl-C:
        # robots, servers and the variant repositories all go.
        with signals_as_interrupt(), tempfile.TemporaryDirectory(prefix="policy-export-fleet-") as tmp:
            for batching in cfg.batching:
                repo = variant_repo(cfg.repo, cfg.model, batching, Path(tmp))
                with started_server(repo, cfg.venv) as server:
                    progress(f"server ready in {server.startup_seconds:.1f} s (batching {'on' if batching else 'off'})")
                    each((server.grpc_url,), batching)
    return {
        "config": {
            "model": cfg.model,
            "repo": str(cfg.repo) if cfg.repo else None,
            "urls": list(cfg.urls),
            "fps": cfg.fps,
            "duration_s": cfg.duration_s,
            "robots": list(cfg.robots),
            "sweep": list(cfg.sweep),
            "client": "RealtimeClient" if cfg.realtime and not unpaced else "PolicyClient (synchronous)",
            "cpu_count": os.cpu_count(),
        },
        "rows": rows,
        "summary": [] if unpaced else summarize(rows),
        "scaling": scaling(rows),
    }
