"""Show a benchmark: Rich table, JSON for CI, and a latency-vs-batch-size plot."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from policy_export.errors import UnavailableError
from policy_export.fsutil import REPORT_MARK, atomic_output, check_report_writable, write_report_atomic


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_table(report: dict[str, Any]) -> Table:
    ceiling = report["ceiling"]
    table = Table(
        title=f"policy-export bench ({report['settings']['threads']} threads, "
        f"{report['settings']['iterations']} timed calls per row)",
        caption=(
            f"ceiling: {ceiling['gflops']:.0f} GFLOP/s sustained float32 matmul ({ceiling['library']}, "
            f"{ceiling['matrix_size']}²); core "
            f"{ceiling['core_gflop_per_sample']:.1f} GFLOP/sample -> floor {ceiling['floor_ms_per_sample']:.0f} ms/sample. "
            "speed-up = eager median / backend median at the same batch size, same run. "
            f"Other processes used {_f(report['machine']['background_cpu'], '.0%')} of the CPUs while timing; "
            f"busy rounds discarded: {sum(r['discarded'] for r in report['settings']['rounds'].values())}."
        ),
    )
    for name, justify in [
        ("backend", "left"),
        ("batch", "right"),
        ("median ms", "right"),
        ("p90 ms", "right"),
        ("p99 ms", "right"),
        ("samples/s", "right"),
        ("vs eager", "right"),
        ("GFLOP/s", "right"),
        ("of ceiling", "right"),
        ("x floor", "right"),
        ("sys ms/call", "right"),
        ("load s", "right"),
        ("peak RSS MB", "right"),
        ("max |Δ| vs eager", "right"),
        ("others' CPU", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    last_batch = None
    for row in report["results"]:
        if last_batch is not None and row["batch_size"] != last_batch:
            table.add_section()
        last_batch = row["batch_size"]
        speedup = row["speedup_vs_eager"]
        colour = "green" if speedup > 1.05 else "red" if speedup < 0.95 else ""
        table.add_row(
            escape(row["backend"]),
            str(row["batch_size"]),
            _f(row["median_ms"], ".1f"),
            _f(row["p90_ms"], ".1f"),
            _f(row["p99_ms"], ".1f"),
            _f(row["throughput"], ".2f"),
            f"[{colour}]{speedup:.2f}x[/]" if colour else f"{speedup:.2f}x",
            _f(row["achieved_gflops"], ".0f"),
            f"{row['fraction_of_ceiling']:.0%}",
            _f(row["latency_vs_floor"], ".2f"),
            _f(row["cpu_sys_ms"], ".0f"),
            _f(row["load_s"], ".2f"),
            _f(row["peak_rss_mb"], ".0f"),
            _f(row["max_abs_vs_eager"], ".1e"),
            _f(row["background_cpu"], ".0%"),
        )
    return table


def skipped_lines(report: dict[str, Any]) -> list[str]:
    """One line per backend that could not run here, with the reason (kept out of the table's columns)."""
    return [f"[yellow]{s['status']}[/] {escape(s['backend'])}: {escape(s['reason'])}" for s in report["skipped"]]


def write_json(report: dict[str, Any], path: Path, force: bool = False, inputs: Sequence[Path] = ()) -> None:
    write_report_atomic(path, json.dumps(report, indent=2) + "\n", force, inputs, "JSON report")


def require_matplotlib() -> None:
    """Checked before a run too: finding out after minutes of timing that the plot cannot be drawn wastes them."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UnavailableError("--plot needs matplotlib: pip install 'policy-export[bench]' (or leave out --plot)")


def write_plot(report: dict[str, Any], path: Path, force: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Latency per call and per sample vs batch size, with the flop/ceiling floor for scale."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    sizes = report["settings"]["batch_sizes"]
    floor = report["ceiling"]["floor_ms_per_sample"]
    fig, (ax_call, ax_sample) = plt.subplots(1, 2, figsize=(11, 4.2))
    backends = list(dict.fromkeys(r["backend"] for r in report["results"]))
    for name in backends:
        rows = sorted((r for r in report["results"] if r["backend"] == name), key=lambda r: r["batch_size"])
        b = [r["batch_size"] for r in rows]
        med = [r["median_ms"] for r in rows]
        lo = [r["median_ms"] - r["min_ms"] for r in rows]
        hi = [r["p90_ms"] - r["median_ms"] for r in rows]
        ax_call.errorbar(b, med, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax_sample.plot(b, [r["ms_per_sample"] for r in rows], marker="o", label=name)
    ax_call.plot(sizes, [floor * s for s in sizes], "k--", lw=1, label="flop / ceiling floor")
    ax_sample.axhline(floor, color="k", ls="--", lw=1, label="flop / ceiling floor")
    ax_call.set(xlabel="batch size", ylabel="latency per call, ms (median; bars min..p90)", xscale="log", yscale="log")
    ax_sample.set(xlabel="batch size", ylabel="ms per sample (median)", xscale="log", ylim=(0, None))
    for ax in (ax_call, ax_sample):
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, alpha=0.3)
    ax_call.yaxis.set_major_formatter(ScalarFormatter())
    ax_call.yaxis.set_minor_formatter(NullFormatter())
    ax_sample.legend(fontsize=8)
    machine = report["machine"]
    fig.suptitle(
        f"{machine['cpu']}, {report['settings']['threads']} threads; ceiling {report['ceiling']['gflops']:.0f} GFLOP/s",
        fontsize=10,
    )
    fig.tight_layout()
    check_report_writable(path, force, "plot", inputs)
    with atomic_output(path, force=True, what="plot", inputs=inputs) as tmp:
        # The mark lets the next run recognise the file as ours (see fsutil.is_our_report).
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": f"{REPORT_MARK} bench"})
    plt.close(fig)
