"""``policy-export bench``: latency and throughput of every backend against LeRobot eager."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, console, exit_with, handle_errors, parse_int_list
from policy_export.enums import OrtProvider


@handle_errors
def bench(
    checkpoint: CheckpointOpt,
    artifact: Annotated[
        list[Path] | None,
        typer.Option(
            "--artifact", "-a", help="Exported file (ONNX, TorchScript, TensorRT plan, OpenVINO IR .xml); repeatable."
        ),
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8",
    iterations: Annotated[int, typer.Option(help="Timed calls per backend and batch size.")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed calls per backend and batch size first.")] = 3,
    threads: Annotated[
        int | None, typer.Option(help="Threads for every backend (default: the CPUs this process may use).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs (the same for every backend).")] = 0,
    ort_provider: Annotated[
        list[OrtProvider] | None,
        typer.Option(help="ONNX Runtime execution provider(s) for .onnx artifacts; repeatable. Default: cpu."),
    ] = None,
    ceiling_seconds: Annotated[
        float,
        typer.Option(
            help="Seconds of matrix multiplies per library and size to measure the ceiling (before and after)."
        ),
    ] = 1.0,
    max_background: Annotated[
        float,
        typer.Option(
            help="Re-run a timed round (every backend) if other processes used more than this share of the CPUs "
            "during it, at most 2x --iterations extra rounds; 1 keeps every round."
        ),
    ] = 0.10,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full results as JSON here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw latency vs batch size to this PNG (needs the 'bench' extra).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite a --json/--plot file that is not a policy-export report (inputs never)."
        ),
    ] = False,
) -> None:
    """Time LeRobot eager inference and each artifact on the same inputs, each in its own process.

    Also measures this machine's sustained matmul rate (the ceiling) and the core's flops per sample, and reports each backend's share of that ceiling.

    Prints what this CPU has for bf16/int8 (VNNI, BF16, AMX) and warns when an artifact's precision will not be
    faster here.

    Exit code 0: every backend ran; 2: bad input, or a backend whose runtime is not available here (the others are still reported).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from policy_export.artifacts import inspect_artifact
    from policy_export.bench.harness import BenchConfig, planned_steps, run_bench, workload_requests
    from policy_export.bench.machine import machine_info
    from policy_export.bench.report import render_table, require_matplotlib, skipped_lines, write_json, write_plot
    from policy_export.bench.results import to_json_dict
    from policy_export.checkpoint.files import check_checkpoint
    from policy_export.cpu import cpu_info, precision_gain_warning
    from policy_export.errors import EXIT_BAD_INPUT, EXIT_OK
    from policy_export.fsutil import check_report_writable
    from policy_export.input_files import files_read

    check_checkpoint(checkpoint)  # the eager worker loads it only after its imports
    config = BenchConfig(
        checkpoint=checkpoint,
        artifacts=list(artifact or []),
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        iterations=iterations,
        warmup=warmup,
        threads=threads,
        seed=seed,
        ort_providers=[p.value for p in ort_provider] if ort_provider else ["cpu"],
        ceiling_seconds=ceiling_seconds,
        max_background=max_background,
    )
    cpu, precision_warnings = cpu_info(), []
    for path in config.artifacts:  # what this CPU has decides whether bf16/int8 can be faster here
        warning = precision_gain_warning(inspect_artifact(path).metadata.precision, cpu)
        if warning:
            precision_warnings.append(f"{path.name}: {warning}")
    inputs = files_read(checkpoint, config.artifacts)
    for out, what in ((json_path, "JSON report"), (plot, "plot")):
        if out is not None:
            check_report_writable(out, force, what, inputs)  # fail now, not after minutes of timing
    if plot is not None:
        require_matplotlib()
    n_backends = len(workload_requests(config))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True, console=console) as progress:
        task = progress.add_task("benchmarking", total=planned_steps(config, n_backends))
        raw = run_bench(config, step=lambda what, n: progress.update(task, advance=n, description=what))
    report = to_json_dict(raw, machine_info(), ["policy-export", *sys.argv[1:]])
    report["machine"]["reduced_precision"] = cpu.record()
    report["machine"]["precision_warnings"] = precision_warnings
    console.print(render_table(report))
    for line in skipped_lines(report):
        console.print(line, soft_wrap=True)
    console.print(f"cpu: {cpu.summary()}")
    for warning in precision_warnings:
        console.print(f"[yellow]warning[/] {warning}", soft_wrap=True)
    if json_path:
        write_json(report, json_path, force, inputs)
        console.print(f"wrote {json_path}")
    if plot:
        write_plot(report, plot, force, inputs)
        console.print(f"wrote {plot}")
    exit_with(EXIT_BAD_INPUT if report["skipped"] else EXIT_OK)
