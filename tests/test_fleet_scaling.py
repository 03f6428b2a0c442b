"""bench-fleet --replica-scaling's arithmetic: the ratio of peaks and what limits the larger fleet, on rows
shaped as measure_row writes them (the measuring itself runs against real servers: BENCHMARKS.md)."""

from __future__ import annotations

from policy_export.fleet.bench import scaling


def _row(replicas: int, clients: int, infer_s: float, cpu: float, queue: float = 1.0, compute: float = 50.0) -> dict:
    return {
        "mode": "sweep", "replicas": replicas, "robots": clients, "batching": True,
        "throughput_infer_per_s": infer_s, "machine_cpu_busy_fraction": cpu,
        "server_queue_ms_per_request": queue, "server_compute_ms_per_request": compute,
        "chunk_p50_ms": queue + compute + 2, "server_busy_fraction": 0.5,
    }  # fmt: skip


def test_ratio_of_peaks_and_the_limiter_at_the_larger_fleets_peak():
    rows = [_row(1, 1, 15, 0.6), _row(2, 1, 14, 0.6), _row(1, 4, 20, 0.95), _row(2, 4, 36, 1.0), _row(2, 8, 30, 1.0)]
    sc = scaling(rows)
    assert sc is not None and sc["replicas"] == [1, 2] and sc["values"] == [20, 36]
    assert abs(sc["ratio"] - 1.8) < 1e-9 and sc["limited_by"].startswith("CPU saturated")
    quiet = scaling([_row(1, 4, 20, 0.5, queue=30.0), _row(2, 4, 30, 0.5, queue=60.0)])
    assert quiet is not None and quiet["limited_by"].startswith("queue time")
    assert scaling([_row(2, 4, 30, 0.5)]) is None  # one fleet size: nothing to compare
