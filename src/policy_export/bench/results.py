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

SCHEMA = 1


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def ceiling_summary(raw: RawBench) -> dict[str, Any]:
    """The best sustained matmul rate seen (any library, either phase) and the latency floor it implies."""
    by_library: dict[str, dict[str, float]] = {}
    for phase in raw.ceiling:
        for lib, m in phase.items():
            if lib == "phase":
                continue
            entry = by_library.setdefault(lib, {"matrix_size": m["size"]})
            entry[f"gflops_{phase['phase']}"] = m["gflops_median"]
            entry["gflops_best_call"] = max(entry.get("gflops_best_call", 0.0), m["gflops_best"])
    best_lib, best = max(
        ((lib, max(v for k, v in e.items() if k in ("gflops_start", "gflops_end"))) for lib, e in by_library.items()),
        key=lambda x: x[1],
    )
    flops = raw.flops["per_sample"]
    return {
        "gflops": best,
        "library": best_lib,
        "threads": raw.threads,
        "method": f"median rate of float32 {raw.config.matmul_size}x{raw.config.matmul_size} matmuls over "
        f">= {raw.config.ceiling_seconds:g} s, before and after the timed rounds; the best library and phase",
        "by_library": by_library,
        "core_gflop_per_sample": flops / 1e9,
        "core_gflop_by_module": {k: v / 1e9 for k, v in raw.flops["by_module"].items()},
        "core_gflop_by_op": {k: v / 1e9 for k, v in raw.flops["by_op"].items()},
        "floor_ms_per_sample": flops / (best * 1e9) * 1e3,
    }


def result_rows(raw: RawBench, ceiling: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (backend, batch size) that ran; skipped backends are listed apart."""
    flops = raw.flops["per_sample"]
    eager = next(r for r in raw.runs if r.backend == "eager")
    rows = []
    for batch in raw.config.batch_sizes:
        eager_ms = _pct([c["wall_s"] * 1e3 for c in eager.calls.get(batch, [])], 50)
        for run in raw.runs:
            if run.status != "ok":
                continue
            calls = run.calls[batch]
            wall = [c["wall_s"] * 1e3 for c in calls]
            median = _pct(wall, 50)
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
                    "p90_ms": _pct(wall, 90),
                    "p99_ms": _pct(wall, 99),
                    "min_ms": min(wall),
                    "mean_ms": float(np.mean(wall)),
                    "throughput": batch / (median / 1e3),
                    "speedup_vs_eager": eager_ms / median,
                    "ms_per_sample": median / batch,
                    "cpu_user_ms": _pct([c["user_s"] * 1e3 for c in calls], 50),
                    "cpu_sys_ms": _pct([c["sys_s"] * 1e3 for c in calls], 50),
                    "minor_faults": _pct([c["minor_faults"] for c in calls], 50),
                    "achieved_gflops": gflops,
                    "fraction_of_ceiling": gflops / ceiling["gflops"],
                    "latency_vs_floor": median / floor_ms,
                    "load_s": run.load_s,
                    "import_s": run.import_s,
                    "peak_rss_mb": run.peak_rss_mb.get(batch, float("nan")),
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
            },
            "policy": raw.spec,
            "machine": {**machine, "load_average": raw.load_average},
            "ceiling": ceiling,
            "results": result_rows(raw, ceiling),
            "skipped": [
                {"backend": r.backend, "status": r.status, "reason": r.reason} for r in raw.runs if r.status != "ok"
            ],
        }
    )
