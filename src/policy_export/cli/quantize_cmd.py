"""``policy-export quantize``: a bf16 or int8 CPU artifact from an fp32 ONNX one, calibrated, measured and recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, ForceOpt, console, exit_with, handle_errors, load, status
from policy_export.enums import LowPrecision, QuantRuntime


@handle_errors
def quantize(
    checkpoint: CheckpointOpt,
    artifact: Annotated[
        Path,
        typer.Option("--artifact", "-a", help="The fp32 ONNX file `policy-export onnx` wrote from this checkpoint."),
    ],
    precision: Annotated[
        LowPrecision,
        typer.Option(
            help="bf16: OpenVINO's bf16 inference hint (needs avx512_bf16 or AMX). int8: post-training quantization."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="model.xml (+ model.bin) for openvino, model.onnx for onnxruntime.")
    ],
    runtime: Annotated[
        QuantRuntime | None,
        typer.Option(
            help="Default: the faster at equal accuracy, as measured per family "
            "(int8: openvino for ACT, onnxruntime for the rest; bf16: openvino)."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            metavar="DATASET_DIR",
            help="A LeRobotDataset folder (meta/info.json) whose features match the checkpoint: calibrate on its frames. "
            "Default: frames drawn from the checkpoint's own statistics.",
        ),
    ] = None,
    calibration_samples: Annotated[int, typer.Option(help="Calibration samples (batch 1 each).")] = 32,
    tolerance_std: Annotated[
        float | None,
        typer.Option(
            help="Largest error per action dimension, as a fraction of its dataset std (default int8 0.02, bf16 0.015)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the calibration draws.")] = 0,
    env: Annotated[
        str | None,
        typer.Option(
            help="Also run closed-loop episodes in this LeRobot simulator (as `policy-export eval`): outside the "
            "reduced-precision band of eager, nothing is written (exit 1)."
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(help="--env: episodes (seeds 0, 1, ...).")] = 10,
    steps: Annotated[int, typer.Option(help="--env: longest episode in control steps.")] = 300,
    force: ForceOpt = False,
) -> None:
    """Quantize for this CPU and record where: the artifact keeps the CPU flags, the calibration and the measured
    speed-up and error (on held-out frames, against the fp32 artifact).

    Exit 0: written and within --tolerance-std on held-out frames; 1: written but beyond it, or (--env) not
    written because closed-loop episodes left the band of eager; 2: bad input, or a precision this runtime
    cannot do on this CPU. `policy-export verify` remains the gate against LeRobot eager.
    """
    from rich.markup import escape

    from policy_export.quantize.run import quantize as run_quantize

    if tolerance_std is not None and not tolerance_std > 0:
        raise typer.BadParameter("--tolerance-std takes a positive fraction, e.g. 0.02")
    ckpt = load(checkpoint)
    gate = None
    if env is not None:
        from policy_export.sim.evaluate import closed_loop_gate

        gate = closed_loop_gate(ckpt, env, episodes, steps)
    with status("quantizing") as spinner:
        res = run_quantize(
            ckpt,
            artifact,
            output,
            precision=precision,
            runtime=runtime,
            calibration=calibration,
            samples=calibration_samples,
            tolerance_std=tolerance_std,
            force=force,
            seed=seed,
            progress=lambda msg: spinner.update(msg),
            closed_loop=gate,
        )
    for w in res.warnings:
        console.print(f"[yellow]warning[/] {escape(w)}")
    console.print(f"cpu: {escape(res.cpu.summary())}")
    calibrated = (
        f"calibrated on {res.calibration['samples']} samples from {res.calibration['source']}"
        if res.calibration["samples"]
        else "no calibration"
    )
    loop = res.closed_loop
    if loop is not None and not res.written:
        console.print(
            f"[bold red]closed loop outside the band[/] ({escape(str(loop['reason']))}); {res.path} not written"
        )
        exit_with(1)
    console.print(f"[green]wrote[/] {res.path} ({res.precision}, {res.runtime}; {escape(calibrated)})")
    dims = ", ".join(f"{d.max_frac_std:.4f}" for d in res.dims)
    console.print(
        f"measured here, batch 1: fp32 onnxruntime {res.fp32_ms:.1f} ms, {res.precision} {res.quantized_ms:.1f} ms "
        f"({res.speedup:.2f}x); max error per action dim / std on held-out frames: [{dims}] "
        f"(worst {res.worst_frac_std:.4f}, --tolerance-std {res.tolerance_std:g})"
    )
    if loop is not None:
        console.print(f"closed loop in {loop['env']}: {escape(str(loop['reason']))}")
    if not res.passed:
        console.print(
            "[bold red]accuracy beyond --tolerance-std[/] on held-out frames (exit 1); see verify for details"
        )
        exit_with(1)
