"""``policy-export bench-realtime``: a robot loop at ``fps`` with the synchronous and the realtime client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, handle_errors
from policy_export.runtime.realtime import Merge


@handle_errors
def bench_realtime(
    artifact: Annotated[
        Path, typer.Option("--artifact", "-a", help="Exported policy (.onnx, .pt, .plan).", show_default=False)
    ],
    triton_url: Annotated[
        str | None, typer.Option(help="Run the model on this Triton server (host:port) instead of in-process.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name on the Triton server (with --triton-url).")] = None,
    fps: Annotated[float, typer.Option(help="Control rate of the simulated robot (Hz).")] = 30.0,
    steps: Annotated[int, typer.Option(help="Timed control steps per client.")] = 3000,
    merge: Annotated[
        Merge | None,
        typer.Option(help="Realtime merge mode; default: ensemble when the artifact ensembles, else replace."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated robot's state and camera frames.")] = 0,
    compare_merges: Annotated[
        bool,
        typer.Option(
            help="Also run every merge (rtc when the model takes RTC inputs, replace, ensemble) at one latency in "
            "virtual time and report the jump where chunks meet, and the highest control rate with 0 fallback ticks."
        ),
    ] = True,
    sim_latency_ms: Annotated[
        float | None, typer.Option(help="Latency of that comparison (default: the realtime run's median chunk).")
    ] = None,
    sim_steps: Annotated[int, typer.Option(help="Control steps of each merge's simulated episode.")] = 300,
    eager_ms: Annotated[
        float | None,
        typer.Option(help="LeRobot eager chunk latency (from `policy-export bench`): its fallback-free rate too."),
    ] = None,
    rtc_queue_threshold: Annotated[
        int | None, typer.Option(help="RTC: ask for a chunk with at most this many actions left (default 30).")
    ] = None,
    stress: Annotated[
        int,
        typer.Option(
            help="Run this many busy processes beside the loop (killed at the end), as a robot's other work would."
        ),
    ] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
) -> None:
    """Drive a simulated robot at --fps, once with PolicyClient and once with RealtimeClient, on the same model.

    A missed tick is a tick whose select_action returned after that tick's deadline. The episode's first action (the first chunk, with the runtime's warm-up) is taken before the timed steps.

    Then, in virtual time at one latency (the realtime run's median chunk, or --sim-latency-ms), every merge on the same robot: the jump max |a_t - a_(t-1)| where chunks meet, and the highest control rate with 0 fallback ticks (ours, and LeRobot eager's with --eager-ms).

    Example: policy-export bench-realtime -a smolvla.onnx --fps 30 --steps 600 --eager-ms 2700 --json rt.json

    Under load: policy-export bench-realtime -a act.onnx --fps 30 --steps 900 --stress 4 --no-compare-merges
    """
    import math

    from policy_export.bench.realtime import RealtimeBenchConfig, render_merges, render_table, run_realtime_bench
    from policy_export.errors import BadInputError
    from policy_export.fsutil import check_writable, write_text_atomic
    from policy_export.input_files import artifact_files

    if not artifact.is_file():
        raise BadInputError(f"--artifact {artifact}: no such file; export one first (policy-export onnx ...)")
    if not (math.isfinite(fps) and fps > 0):
        raise BadInputError(f"--fps must be > 0, got {fps:g}")
    if steps < 1:
        raise BadInputError(f"--steps must be >= 1, got {steps}")
    if not 0 <= stress <= 64:
        raise BadInputError(f"--stress must be between 0 and 64 busy processes, got {stress}")
    if sim_steps < 2:
        raise BadInputError(f"--sim-steps must be >= 2, got {sim_steps}")
    for name, value in (("--sim-latency-ms", sim_latency_ms), ("--eager-ms", eager_ms)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise BadInputError(f"{name} must be a latency in milliseconds >= 0, got {value:g}")
    if bool(triton_url) != bool(model):
        raise BadInputError("--triton-url and --model go together: the server's address and the model's name on it")
    if json_path is not None and json_path.is_dir():
        raise BadInputError(f"--json {json_path}: is a directory; give a file name")
    if json_path is not None:
        check_writable(json_path, True, "JSON report", inputs=artifact_files(artifact))  # an input is never overwritten
    cfg = RealtimeBenchConfig(
        artifact=artifact,
        fps=fps,
        steps=steps,
        merge=merge,
        triton_url=triton_url,
        model=model,
        seed=seed,
        compare_merges=compare_merges,
        sim_latency_ms=sim_latency_ms,
        sim_steps=sim_steps,
        eager_ms=eager_ms,
        rtc_queue_threshold=rtc_queue_threshold,
        stress=stress,
    )
    report = run_realtime_bench(
        cfg, progress=lambda what: console.print(f"[dim]running {steps} steps at {fps:g} Hz: {what}[/]")
    )
    console.print(render_table(report))
    merges_table = render_merges(report)
    if merges_table is not None:
        console.print(merges_table)
    if json_path:
        write_text_atomic(json_path, json.dumps(report, indent=2) + "\n", inputs=artifact_files(artifact))
        console.print(f"wrote {json_path}")
