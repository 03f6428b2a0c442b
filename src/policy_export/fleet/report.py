"""bench-fleet's table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"


def _batching(value: bool | None) -> str:
    return "on" if value else "off" if value is not None else "as served"


def render_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    rows = report["rows"]
    sweep = bool(report["config"]["sweep"])
    title = (
        "bench-fleet --sweep: unpaced clients (throughput against concurrency)"
        if sweep
        else f"bench-fleet: robots at {report['config']['fps']:g} Hz for {report['config']['duration_s']:g} s"
    )
    table = Table(title=title)
    scaled = bool(report.get("scaling"))
    cols = [*(["replicas"] if scaled else []), "batching", "clients" if sweep else "robots"]
    cols += ["infer/s"] if sweep else ["missed", "fallback"]
    cols += ["chunk p50 ms", "chunk p99 ms", "queue ms/req", "compute ms/req", "avg batch", "CPU busy"]
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        cells = [*([str(r.get("replicas", 1))] if scaled else []), _batching(r["batching"]), str(r["robots"])]
        cells += [f"{r['throughput_infer_per_s']:.1f}"] if sweep else [str(r["missed_ticks"]), str(r["fallback_ticks"])]
        cells += [
            _ms(r["chunk_p50_ms"]),
            _ms(r["chunk_p99_ms"]),
            _ms(r["server_queue_ms_per_request"]),
            _ms(r["server_compute_ms_per_request"]),
            "-" if r["avg_batch_size"] != r["avg_batch_size"] else f"{r['avg_batch_size']:.2f}",
            f"{r['machine_cpu_busy_fraction']:.0%}",
        ]
        table.add_row(*cells)
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for s in report["summary"]:
        bound = " (at least: no fallback at the largest count tried)" if s["capacity_is_lower_bound"] else ""
        replicas = f"{s['replicas']} replica(s), " if s.get("replicas", 1) > 1 or report.get("scaling") else ""
        lines.append(
            f"{replicas}batching {_batching(s['batching'])}: capacity {s['capacity_robots']} robot(s) with no fallback tick{bound}; "
            f"rule of thumb 0.8 / ({s['request_rate_per_robot_hz']:.2f} req/s x {s['inference_ms']:.1f} ms) = "
            f"{s['rule_of_thumb_robots']:.1f}; limited by {s['limited_by']} at {s['limiter_measured_at_robots']} robot(s)"
        )
    sc = report.get("scaling")
    if sc:
        lines.append(
            f"replicas {sc['replicas'][0]} -> {sc['replicas'][1]}: {sc['measure']} {sc['values'][0]:.1f} -> "
            f"{sc['values'][1]:.1f} = {sc['ratio']:.2f}x on {sc['cpu_count']} CPU(s); the larger fleet is limited by "
            f"{sc['limited_by']}"
        )
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Robots vs chunk p99 and fallback ticks (or, for a sweep, clients vs throughput), per batching mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from policy_export.fsutil import atomic_output

    rows = report["rows"]
    sweep = bool(report["config"]["sweep"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax2 = None if sweep else ax.twinx()
    for batching in sorted({r["batching"] for r in rows}, key=str):
        mine = sorted((r for r in rows if r["batching"] == batching), key=lambda r: r["robots"])
        xs = [r["robots"] for r in mine]
        label = f"batching {_batching(batching)}"
        if sweep:
            ax.plot(xs, [r["throughput_infer_per_s"] for r in mine], marker="o", label=label)
        else:
            ax.plot(xs, [r["chunk_p99_ms"] for r in mine], marker="o", label=f"chunk p99, {label}")
            assert ax2 is not None
            ax2.plot(xs, [r["fallback_ticks"] for r in mine], marker="x", linestyle="--", label=f"fallback, {label}")
    ax.set_xlabel("concurrent clients" if sweep else "robots")
    ax.set_ylabel("inferences / s" if sweep else "chunk latency p99 (ms)")
    if ax2 is not None:
        ax2.set_ylabel("fallback ticks")
        (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    else:
        ax.legend(fontsize=8)
    ax.set_title(f"{report['config']['model']}: " + ("throughput vs concurrency" if sweep else "robots vs latency"))
    fig.tight_layout()
    with atomic_output(path, force=True, what="plot") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
