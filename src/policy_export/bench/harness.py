"""Run the benchmark: start one worker per backend, interleave their calls, collect raw timings.

Why interleave: the machine this runs on (a robot's computer, a shared CI runner) is
rarely quiet. Timing backend A for a minute and then backend B for a minute lets any
change in background load land on one of them only. Here every timed round calls each
backend once, in rotating order, one at a time, so slow drifts hit all backends alike and
the speed-up ratios stay meaningful even when absolute numbers move. Workers never run
concurrently, and a short pause before each call lets the previous worker's spinning
thread pool go to sleep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.artifacts import ArtifactInfo, check_compatible, detect_kind, inspect_artifact
from policy_export.bench.ipc import WorkerCrashed, WorkerProcess
from policy_export.bench.machine import Quiet, machine_cpu_seconds
from policy_export.errors import BadInputError, UnavailableError

if TYPE_CHECKING:
    from policy_export.spec import PolicySpec

CEILING_LIBRARIES = ("torch", "onnxruntime")


@dataclass
class BenchConfig:
    checkpoint: Path
    artifacts: list[Path]
    batch_sizes: list[int]
    iterations: int = 20
    warmup: int = 3
    threads: int | None = None
    seed: int = 0
    ort_providers: list[str] = field(default_factory=lambda: ["cpu"])
    matmul_sizes: tuple[int, ...] = (1024, 2048)
    ceiling_seconds: float = 1.0
    max_background: float = 0.10
    quiet_wait_s: float = 20.0
    pause_s: float = 0.02

    def resolved_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


@dataclass
class WorkloadRun:
    """One backend's raw measurements; turned into table rows by :mod:`.results`."""

    backend: str
    #: What the worker was asked to load (``{"backend": "eager" | "artifact", ...}``).
    request: dict[str, Any]
    kind: str = ""
    runtime: str = ""
    provider: str | None = None
    precision: str = ""
    image_format: str = "float32"
    status: str = "ok"  # ok | skipped | error
    reason: str = ""
    import_s: float = float("nan")
    load_s: float = float("nan")
    load_rss_mb: float = float("nan")
    calls: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    max_abs_vs_eager: dict[int, float] = field(default_factory=dict)


@dataclass
class RawBench:
    config: BenchConfig
    threads: int
    cpus: int
    runs: list[WorkloadRun]
    flops: dict[str, Any]
    ceiling: list[dict[str, Any]]
    spec: dict[str, Any]
    load_average: dict[str, list[float]]
    rounds: dict[int, dict[str, int]] = field(default_factory=dict)


def planned_steps(config: BenchConfig, n_backends: int) -> int:
    """Progress-bar total: loads, two ceiling phases, and every warm-up and timed call."""
    calls = n_backends * len(config.batch_sizes) * (config.warmup + config.iterations)
    return n_backends + 2 * len(CEILING_LIBRARIES) * len(config.matmul_sizes) + calls


def workload_requests(config: BenchConfig) -> list[tuple[str, dict[str, Any]]]:
    requests: list[tuple[str, dict[str, Any]]] = [("eager", {"backend": "eager", "checkpoint": str(config.checkpoint)})]
    for path in config.artifacts:
        for provider in config.ort_providers:
            is_onnx = detect_kind(Path(path)) == "onnx"
            if not is_onnx and provider != config.ort_providers[0]:
                continue  # the provider list only multiplies ONNX files
            name = path.name if provider == "cpu" or not is_onnx else f"{path.name}[{provider}]"
            requests.append((name, {"backend": "artifact", "artifact": str(path), "provider": provider}))
    names = [n for n, _ in requests]
    if len(set(names)) != len(names):
        raise BadInputError("two --artifact files share a file name; rename one so the report can tell them apart")
    return requests


def _check_config(config: BenchConfig) -> list[ArtifactInfo]:
    if any(b < 1 for b in config.batch_sizes) or config.iterations < 1 or config.warmup < 0:
        raise BadInputError("--batch-sizes and --iterations must be positive, --warmup non-negative")
    if config.threads is not None and config.threads < 1:
        raise BadInputError("--threads must be a positive integer")
    if config.ceiling_seconds < 0:
        raise BadInputError("--ceiling-seconds must not be negative")
    if not 0 <= config.max_background <= 1:
        raise BadInputError("--max-background is a share of the CPUs, between 0 and 1 (1 keeps every round)")
    return [inspect_artifact(Path(a)) for a in config.artifacts]  # bad files fail before any slow work


def make_feed(
    spec: PolicySpec, batch: int, seed: int, center: np.ndarray, scale: np.ndarray, image_format: str
) -> dict[str, np.ndarray]:
    """The same seeded inputs for every backend of one image format."""
    from policy_export.inputs import random_inputs

    rng = np.random.default_rng([seed, batch])
    return random_inputs(spec, batch, rng, center, scale, image_format=image_format)


def run_bench(config: BenchConfig, step: Callable[[str, int], None] = lambda what, n: None) -> RawBench:
    """Load every backend, measure the ceiling, then time interleaved rounds per batch size."""
    from policy_export.spec import PolicySpec
    from policy_export.verify import check_run_size

    infos = _check_config(config)
    requests = workload_requests(config)
    threads = config.resolved_threads()
    load_average = {"start": list(os.getloadavg())}
    workers: dict[str, WorkerProcess] = {}
    runs: list[WorkloadRun] = []
    try:
        # Load one at a time, so each load time is measured alone.
        for name, request in requests:
            step(f"loading {name}", 1)
            run = WorkloadRun(backend=name, request=request, provider=request.get("provider"))
            runs.append(run)
            worker = WorkerProcess(name, threads)
            workers[name] = worker
            try:
                info = worker.call("load", **request)
            except (UnavailableError, WorkerCrashed) as exc:
                if name == "eager":
                    raise
                run.status = "skipped" if isinstance(exc, UnavailableError) else "error"
                run.reason = str(exc).splitlines()[0]
                workers.pop(name).close()
                continue
            run.kind, run.runtime = info["kind"], info["runtime"]
            run.precision, run.image_format = info["precision"], info["image_format"]
            run.import_s, run.load_s, run.load_rss_mb = info["import_s"], info["load_s"], info["rss_mb"]
            if name == "eager":
                policy_spec = PolicySpec.from_dict(info["spec"])
                center, scale = info["state_center"], info["state_scale"]
                check_run_size(policy_spec, config.batch_sizes)  # before any timing, not a MemoryError later
                for artifact in infos:
                    # Timing only: an artifact of other statistics is as fast; shapes must still fit.
                    check_compatible(artifact, policy_spec, config.checkpoint, allow_other_checkpoint=True)
                eager_info = info

        flops = workers["eager"].call("flops")
        probes = {lib: WorkerProcess(f"matmul-{lib}", threads) for lib in CEILING_LIBRARIES}
        workers.update({f"matmul-{lib}": w for lib, w in probes.items()})
        for lib, probe in probes.items():
            probe.call("load", backend="matmul", library=lib, sizes=list(config.matmul_sizes))
        quiet = Quiet(config.max_background, config.quiet_wait_s)
        ceiling = _measure_ceiling(probes, config, "start", quiet, step)

        active = [r for r in runs if r.status == "ok"]
        rounds = {}
        for batch in config.batch_sizes:
            rounds[batch] = _time_batch(active, workers, config, batch, policy_spec, center, scale, quiet, step)

        ceiling += _measure_ceiling(probes, config, "end", quiet, step)
        load_average["end"] = list(os.getloadavg())
    finally:
        for worker in workers.values():
            worker.close()
    return RawBench(
        config=config,
        threads=threads,
        cpus=os.cpu_count() or 1,
        runs=runs,
        flops=flops,
        ceiling=ceiling,
        spec=eager_info["spec"],
        load_average=load_average,
        rounds=rounds,
    )


def _measure_ceiling(
    probes: dict[str, WorkerProcess], config: BenchConfig, phase: str, quiet: Quiet, step: Callable[[str, int], None]
) -> list[dict[str, Any]]:
    """One measurement per library and size; retried (twice at most) if the machine was busy."""
    out = []
    for lib, probe in probes.items():
        for size in config.matmul_sizes:
            step(f"matmul ceiling ({lib}, {size}, {phase})", 1)
            for _attempt in range(3):
                quiet.wait()
                time.sleep(config.pause_s)
                b0, t0 = machine_cpu_seconds()[0], time.perf_counter()
                m = probe.call("measure", size=size, seconds=config.ceiling_seconds)
                share = quiet.others_share(machine_cpu_seconds()[0] - b0, m["cpu_s"], time.perf_counter() - t0)
                if quiet.ok(share):
                    break
            out.append({**m, "phase": phase, "background_cpu": share})
    return out


def _time_batch(
    active: list[WorkloadRun],
    workers: dict[str, WorkerProcess],
    config: BenchConfig,
    batch: int,
    spec: PolicySpec,
    center: np.ndarray,
    scale: np.ndarray,
    quiet: Quiet,
    step: Callable[[str, int], None],
) -> dict[str, int]:
    """Warm-up rounds, then timed rounds until ``iterations`` quiet ones are kept."""
    feeds = {fmt: make_feed(spec, batch, config.seed, center, scale, fmt) for fmt in {r.image_format for r in active}}
    for run in active:
        workers[run.backend].call("feed", feed=feeds[run.image_format])
        run.calls[batch] = []

    def one_round(i: int, what: str) -> dict[str, dict[str, float]]:
        timings = {}
        for run in _rotated(active, i):
            step(f"batch {batch}: {what} {run.backend}", 1 if what == "warm-up" else 0)
            time.sleep(config.pause_s)
            (busy0, steal0), t0 = machine_cpu_seconds(), time.perf_counter()
            timing = workers[run.backend].call("run", calls=1)[0]
            (busy1, steal1), t1 = machine_cpu_seconds(), time.perf_counter()
            timing.update(window_s=t1 - t0, machine_busy_s=busy1 - busy0, steal_s=steal1 - steal0)
            timings[run.backend] = timing
        return timings

    for i in range(config.warmup):
        one_round(i, "warm-up")
    kept = discarded = 0
    max_rounds = 3 * config.iterations
    while kept < config.iterations:
        quiet.wait()
        timings = one_round(kept + discarded, "timing")
        # Summed over the round: /proc/stat counts in 10 ms ticks, too coarse for one short call.
        share = quiet.others_share(
            sum(t["machine_busy_s"] for t in timings.values()),
            sum(t["user_s"] + t["sys_s"] for t in timings.values()),
            sum(t["window_s"] for t in timings.values()),
        )
        busy_round = not quiet.ok(share)
        if busy_round and kept + discarded < max_rounds - (config.iterations - kept):
            discarded += 1
            continue
        kept += 1
        step(f"batch {batch}: timed round {kept}/{config.iterations}", len(active))
        for run in active:
            run.calls[batch].append(timings[run.backend])

    reference = workers["eager"].call("output")
    for run in active:
        run.peak_rss_mb[batch] = workers[run.backend].call("peak")
        if run.backend != "eager" and run.image_format == "float32":
            out = workers[run.backend].call("output")
            run.max_abs_vs_eager[batch] = float(np.abs(out - reference).max())
    return {"kept": kept, "discarded": discarded}


def _rotated(items: list[WorkloadRun], k: int) -> list[WorkloadRun]:
    """Rotate call order each round so no backend always runs right after the same one."""
    k %= len(items)
    return items[k:] + items[:k]
