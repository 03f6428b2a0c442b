"""From raw per-call timings to the figures people compare: percentiles, speed-up, share of the ceiling.

Everything here is derived from one :class:`~policy_export.bench.harness.RawBench`, so
every ratio (speed-up over eager, fraction of the ceiling) compares numbers taken in the
same run on the same machine, never a number remembered from another day.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from policy_export.bench.harness import RawBench
from policy_export.percentile import percentile

SCHEMA = 1


def ceiling_summary(raw: RawBench) -> dict[str, Any]:
    """The best sustained matmul rate measured (any library, size, phase) and the latency floor it implies."""
    by_library: dict[str, dict[str, dict[str, float]]] = {}
    for m in raw.ceiling:
        entry = by_library.setdefault(m["library"], {}).setdefault(str(m["size"]), {})
        entry[f"gflops_{m['phase']}"] = m["gflops_median"]
        entry[f"background_cpu_{m['phase']}"] = m["background_cpu"]
    best = max(raw.ceiling, key=lambda m: m["gflops_median"])
    flops = raw.flops["per_sample"]
    return {
        "gflops": best["gflops_median"],
        "library": best["library"],
        "matrix_size": best["size"],
        "threads": raw.threads,
        "method": "median rate of repeated float32 NxN matmuls for >= "
        f"{raw.config.ceiling_seconds:g} s per library and size, before and after the timed rounds; the best one",
        "by_library": by_library,
        "core_gflop_per_sample": flops / 1e9,
        "core_gflop_by_module": {k: v / 1e9 for k, v in raw.flops["by_module"].items()},
        "core_gflop_by_op": {k: v / 1e9 for k, v in raw.flops["by_op"].items()},
        "floor_ms_per_sample": flops / (best["gflops_median"] * 1e9) * 1e3,
    }


def background_load(calls: list[dict[str, float]], cpus: int) -> dict[str, float]:
    """Share of the machine's CPUs that other processes (and the hypervisor) took during these calls."""
    window = sum(c["window_s"] for c in calls) * cpus
    others = sum(c["machine_busy_s"] - c["user_s"] - c["sys_s"] for c in calls)
    steal = sum(c["steal_s"] for c in calls)
    if not window or not math.isfinite(others):
        return {"background_cpu": float("nan"), "steal": float("nan")}
    return {"background_cpu": max(0.0, others / window), "steal": steal / window}


def result_rows(raw: RawBench, ceiling: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (backend, batch size) that ran; skipped backends are listed apart."""
    flops = raw.flops["per_sample"]
    eager = next(r for r in raw.runs if r.backend == "eager")
    rows = []
    for batch in raw.config.batch_sizes:
        eager_ms = percentile([c["wall_s"] * 1e3 for c in eager.calls.get(batch, [])], 50)
        for run in raw.runs:
            if run.status != "ok":
                continue
            calls = run.calls[batch]
            wall = [c["wall_s"] * 1e3 for c in calls]
            median = percentile(wall, 50)
            gflops = flops * batch / (median / 1e3) / 1e9
            floor_ms = ceiling["floor_ms_per_sample"] * batch
            rows.append(
                {
                    "backend": run.backend,
                    "kind": run.kind,
                    "runtime": run.runtime,
                    "provider": run.provider,
                    "precision": run.precision,
                    "image_format": run.image_format,
                    "batch_size": batch,
                    "iterations": len(wall),
                    "median_ms": median,
                    "p90_ms": percentile(wall, 90),
                    "p99_ms": percentile(wall, 99),
                    "min_ms": min(wall),
                    "mean_ms": float(np.mean(wall)),
                    "throughput": batch / (median / 1e3),
                    "speedup_vs_eager": eager_ms / median,
                    "ms_per_sample": median / batch,
                    "cpu_user_ms": percentile([c["user_s"] * 1e3 for c in calls], 50),
                    "cpu_sys_ms": percentile([c["sys_s"] * 1e3 for c in calls], 50),
                    "minor_faults": percentile([c["minor_faults"] for c in calls], 50),
                    "preempted_per_call": percentile([c["preempted"] for c in calls], 50),
                    **background_load(calls, raw.cpus),
                    "achieved_gflops": gflops,
                    "fraction_of_ceiling": gflops / ceiling["gflops"],
                    "latency_vs_floor": median / floor_ms,
                    "load_s": run.load_s,
                    "import_s": run.import_s,
                    "peak_rss_mb": run.peak_rss_mb.get(batch, float("nan")),
                    "rss_after_load_mb": run.load_rss_mb,
                    "max_abs_vs_eager": run.max_abs_vs_eager.get(batch),
                }
            )
    return rows


def _finite(value: Any) -> Any:
    """JSON has no NaN: CI parsers choke on it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json_dict(raw: RawBench, machine: dict[str, Any], command: list[str]) -> dict[str, Any]:
    ceiling = ceiling_summary(raw)
    cfg = raw.config
    return _finite(
        {
            "schema": SCHEMA,
            "command": command,
            "settings": {
                "checkpoint": str(cfg.checkpoint),
                "artifacts": [str(a) for a in cfg.artifacts],
                "batch_sizes": cfg.batch_sizes,
                "iterations": cfg.iterations,
                "warmup": cfg.warmup,
                "threads": raw.threads,
                "seed": cfg.seed,
                "ort_providers": cfg.ort_providers,
                "schedule": "one worker process per backend; timed calls interleaved round-robin, one at a time",
                "max_background": cfg.max_background,
                "rounds": {str(b): r for b, r in raw.rounds.items()},
            },
            "policy": raw.spec,
            "machine": {
                **machine,
                "load_average": raw.load_average,
                **background_load([c for r in raw.runs for cs in r.calls.values() for c in cs], raw.cpus),
            },
            "ceiling": ceiling,
            "results": result_rows(raw, ceiling),
            "skipped": [
                {"backend": r.backend, "status": r.status, "reason": r.reason} for r in raw.runs if r.status != "ok"
            ],
        }
    )
