"""``policy-export bench-shim``: per-step overhead of the host-side action shim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, handle_errors, parse_int_list


@handle_errors
def bench_shim(
    chunk_size: Annotated[int, typer.Option(help="Actions per chunk (ACT's default: 100).")] = 100,
    action_dim: Annotated[int, typer.Option(help="Values per action (14: a bimanual ALOHA).")] = 14,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated numbers of robots served at once.")] = "1,16",
    queue_steps: Annotated[str, typer.Option(help="Comma-separated n_action_steps to time in queue mode.")] = "100,10",
    ensemble_coeff: Annotated[float, typer.Option(help="Temporal ensembling coefficient to time.")] = 0.01,
    steps: Annotated[int, typer.Option(help="Timed control steps per row.")] = 5000,
    lerobot: Annotated[
        bool, typer.Option(help="Also time LeRobot's own torch bookkeeping (deque / ACTTemporalEnsembler).")
    ] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a --json file that is not a policy-export report.")
    ] = False,
) -> None:
    """Time the action queue and temporal ensembling alone, per control step (median, p90, p99).

    The core is not run: each step gets a ready chunk, so the figures are the shim's own cost on this host.
    """
    from policy_export.bench.shim import ShimBenchConfig, render_table, run_shim_bench
    from policy_export.errors import BadInputError
    from policy_export.fsutil import check_report_writable, write_report_atomic

    queue = parse_int_list(queue_steps, "--queue-steps")
    if json_path:
        check_report_writable(json_path, force, "JSON report")  # before the timing, not after
    if steps < 10 or chunk_size < 1 or action_dim < 1:
        raise BadInputError("--steps must be >= 10 and --chunk-size / --action-dim >= 1")
    if any(n > chunk_size for n in queue):
        raise BadInputError(f"--queue-steps must be <= --chunk-size {chunk_size}, got {queue}")
    cfg = ShimBenchConfig(
        chunk_size=chunk_size,
        action_dim=action_dim,
        batch_sizes=tuple(parse_int_list(batch_sizes, "--batch-sizes")),
        queue_steps=tuple(queue),
        ensemble_coeff=ensemble_coeff,
        steps=steps,
        lerobot=lerobot,
    )
    report = run_shim_bench(cfg)
    console.print(render_table(report))
    if report.get("note"):
        console.print(f"[yellow]note[/] {report['note']}")
    if json_path:
        write_report_atomic(json_path, json.dumps(report, indent=2) + "\n", force, what="JSON report")
        console.print(f"wrote {json_path}")
