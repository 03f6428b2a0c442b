"""What ``eval`` found: JSON for CI, a Rich table per episode, and the latency table and plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.fsutil import REPORT_MARK, write_report_atomic
from policy_export.sim.evaluate import BANDS, CHAOS_MARGIN, RETURN_RTOL, EvalResult

if TYPE_CHECKING:
    from rich.table import Table


def chaos_summary(result: EvalResult) -> dict[str, Any]:
    """The chaos baseline per episode (first step eager+1ulp left the tolerance; None: never), and the
    step it came within CHAOS_MARGIN of it (what fp32 artifacts are held to)."""
    base = [r for r in result.rows if r.runner == "eager+1ulp"]
    firsts = [r.first_divergence for r in base]
    hit = [f for f in firsts if f is not None]
    return {
        "per_episode": firsts,
        "margin": CHAOS_MARGIN,
        "gate_step_per_episode": [r.first_within_margin for r in base],
        "diverged_episodes": len(hit),
        "episodes": len(firsts),
        "earliest": min(hit) if hit else None,
        "median_of_diverged": float(np.median(hit)) if hit else None,
    }


def latency_summary(result: EvalResult) -> list[dict[str, Any]]:
    """Success rate and mean return against the realtime client's simulated latency (one entry per runner)."""
    out = []
    for v in result.verdicts:
        if v.latency_steps is None:
            continue
        mine = [r for r in result.rows if r.runner == v.runner]
        firsts = [r.first_divergence for r in mine]
        out.append(
            {
                "runner": v.runner,
                "artifact": v.artifact,
                "latency_steps": v.latency_steps,
                "success_rate": v.success_rate,
                "mean_return": v.mean_return,
                "diverged_episodes": sum(f is not None for f in firsts),
                "fallback_ticks": int(sum(int(r.extra.get("fallback_ticks", 0)) for r in mine)),  # type: ignore[call-overload]
                "actions_skipped_latency": int(sum(int(r.extra.get("actions_skipped_latency", 0)) for r in mine)),  # type: ignore[call-overload]
            }
        )
    return out


def to_dict(result: EvalResult) -> dict[str, Any]:
    s = result.settings
    return {
        "report": f"{REPORT_MARK} eval",
        "checkpoint": result.checkpoint,
        "env": s.env,
        "task": s.task,
        "episodes": s.episodes,
        "seed": s.seed,
        "steps": s.steps,
        "fps": result.fps,
        "tolerance": s.tolerance,
        "tolerance_space": "normalized",
        "action_scale": result.action_scale,
        "return_rtol": RETURN_RTOL,
        "reduced_precision_bands": BANDS,
        "chaos_baseline": chaos_summary(result) if s.chaos else None,
        "latency": latency_summary(result),
        "verdicts": [asdict(v) for v in result.verdicts],
        "rows": [asdict(r) for r in result.rows],
        "videos": result.videos,
        "exit_code": result.exit_code,
    }


def write_json(result: EvalResult, path: Path, inputs: list[Path], force: bool = False) -> None:
    text = json.dumps(to_dict(result), indent=2, default=str) + "\n"
    write_report_atomic(path, text, force, inputs, "JSON report")


def _div(x: int | None) -> str:
    return "-" if x is None else str(x)


def render_table(result: EvalResult) -> Table:
    from rich.markup import escape
    from rich.table import Table

    s = result.settings
    table = Table(
        title=f"eval {s.env}: {s.episodes} episodes from seed {s.seed}, up to {s.steps} steps - {result.checkpoint}",
        title_justify="left",
        caption=f"diff: |action - eager's| per step, max/mean over the steps both ran; 'norm' in the policy's normalized "
        f"action space, 'robot' in robot units; diverges: first step beyond {s.tolerance:g} (normalized)",
        caption_justify="left",
    )
    for col in (
        "runner",
        "ep",
        "seed",
        "return",
        "success",
        "steps",
        "max norm",
        "mean norm",
        "max robot",
        "mean robot",
        "diverges",
    ):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for r in result.rows:
        table.add_row(
            escape(r.runner),
            str(r.episode),
            str(r.seed),
            f"{r.total_return:.4g}",
            "yes" if r.success else "no",
            str(r.steps),
            f"{r.max_diff:.2e}",
            f"{r.mean_diff:.2e}",
            f"{r.max_diff_robot:.2e}",
            f"{r.mean_diff_robot:.2e}",
            _div(r.first_divergence),
        )
    return table


def render_verdicts(result: EvalResult) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="verdict per runner", title_justify="left")
    for col in ("runner", "precision", "success rate", "mean return", "gate", "why"):
        table.add_column(col, justify="right" if col in ("success rate", "mean return") else "left")
    for v in result.verdicts:
        gate = ("[green]pass[/]" if v.passed else "[red]FAIL[/]") if v.gated else "-"
        table.add_row(
            escape(v.runner),
            v.precision or "-",
            f"{v.success_rate:.2f}",
            f"{v.mean_return:.4g}",
            gate,
            escape(v.reason),
        )
    return table


def render_latency(result: EvalResult) -> Table | None:
    from rich.markup import escape
    from rich.table import Table

    rows = latency_summary(result)
    if not rows:
        return None
    table = Table(title="realtime client in simulated time: latency K control steps", title_justify="left")
    for col in ("runner", "K", "success rate", "mean return", "diverged eps", "fallback ticks", "skipped (latency)"):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for r in rows:
        table.add_row(
            escape(r["runner"]),
            str(r["latency_steps"]),
            f"{r['success_rate']:.2f}",
            f"{r['mean_return']:.4g}",
            str(r["diverged_episodes"]),
            str(r["fallback_ticks"]),
            str(r["actions_skipped_latency"]),
        )
    return table


def write_latency_plot(result: EvalResult, path: Path, inputs: list[Path], force: bool = False) -> None:
    """Success rate and mean return against K, one line per artifact (needs matplotlib: the bench extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from policy_export.errors import UnavailableError

        raise UnavailableError("--plot needs matplotlib: pip install 'policy-export[bench]'") from None
    from policy_export.fsutil import atomic_output, check_report_writable

    rows = latency_summary(result)
    check_report_writable(path, force, "plot", inputs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for artifact in dict.fromkeys(r["artifact"] for r in rows):
        mine = sorted((r for r in rows if r["artifact"] == artifact), key=lambda r: r["latency_steps"])
        ks = [r["latency_steps"] for r in mine]
        ax1.plot(ks, [r["success_rate"] for r in mine], marker="o", label=Path(artifact).name)
        ax2.plot(ks, [r["mean_return"] for r in mine], marker="o", label=Path(artifact).name)
    eager = [v for v in result.verdicts if v.runner == "eager"]
    for ax, key in ((ax1, "success_rate"), (ax2, "mean_return")):
        if eager:
            ax.axhline(getattr(eager[0], key), color="grey", linestyle="--", label="eager (sync)")
        ax.set_xlabel("inference latency K (control steps of sim time)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("success rate")
    ax2.set_ylabel("mean return")
    ax2.legend(fontsize=8)
    s = result.settings
    fig.suptitle(f"{s.env}: {s.episodes} episodes, realtime client vs latency")
    fig.tight_layout()
    with atomic_output(path, True, "plot", inputs) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
