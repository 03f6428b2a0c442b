"""``policy-export verify``: the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, console, exit_with, handle_errors, load, parse_int_list
from policy_export.enums import OrtProvider, ToleranceSpace
from policy_export.tolerances import DEFAULT_ATOL, DEFAULT_TOLERANCE_STD


def _parse_atol_overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise typer.BadParameter(f"--artifact-tolerance takes FILE=ATOL, got {item!r}")
    return out


@handle_errors
def verify(
    checkpoint: CheckpointOpt,
    artifact: Annotated[
        list[Path],
        typer.Option("--artifact", "-a", help="Exported file (ONNX, TorchScript, TensorRT plan); repeatable."),
    ],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes to test.")] = "1,4",
    samples: Annotated[int, typer.Option(help="Random input draws per batch size.")] = 2,
    tolerance: Annotated[
        float | None,
        typer.Option(
            help=f"Absolute tolerance for every artifact, in --tolerance-space (default by precision: fp32 {DEFAULT_ATOL['fp32']:g}, fp16 {DEFAULT_ATOL['fp16']:g})."
        ),
    ] = None,
    tolerance_space: Annotated[
        ToleranceSpace,
        typer.Option(
            help="Where tolerances apply: 'normalized' = the policy's normalized action space (the checkpoint's "
            "action stats and mode; 1e-4 means the same for pixels, radians or millimetres), robot-unit errors "
            "reported beside; 'robot' = absolute in robot units (the meaning before issue 19)."
        ),
    ] = ToleranceSpace.NORMALIZED,
    rtol: Annotated[
        float, typer.Option(help="Relative tolerance added to the absolute one (numpy.allclose rule).")
    ] = 0.0,
    artifact_tolerance: Annotated[
        list[str] | None, typer.Option(help="Per-artifact absolute tolerance, FILE=ATOL; repeatable.")
    ] = None,
    tolerance_std: Annotated[
        float | None,
        typer.Option(
            help="Reduced-precision artifacts: largest error per action dimension as a fraction of the dataset's "
            f"action std (default int8 {DEFAULT_TOLERANCE_STD['int8']:g}, bf16 {DEFAULT_TOLERANCE_STD['bf16']:g})."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    ort_provider: Annotated[
        OrtProvider, typer.Option(help="ONNX Runtime execution provider for .onnx artifacts.")
    ] = OrtProvider.CPU,
    report: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Write a JUnit XML report here (one test case per artifact x batch).")
    ] = None,
    rollout: Annotated[
        int,
        typer.Option(
            metavar="STEPS",
            help="Also run STEPS control steps of LeRobot's stateful select_action against the runtime client + "
            "action shim (queue mode; ensembling mode too for ensembling checkpoints), with a reset mid-episode.",
        ),
    ] = 0,
    allow_other_checkpoint: Annotated[
        bool,
        typer.Option(
            help="Compare an artifact exported from other normalization statistics (another checkpoint) anyway, "
            "with a warning; without it that is exit 2."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite a --report/--junit file that is not a policy-export report (inputs are never overwritten).",
        ),
    ] = False,
) -> None:
    """Compare artifacts, each run by its real runtime, with LeRobot's eager inference.

    Exit code 0: all artifacts within tolerance; 1: a parity failure; 2: bad input or an artifact that could not be run here.
    """
    from rich.markup import escape
    from rich.progress import Progress

    from policy_export.fsutil import check_report_writable
    from policy_export.input_files import files_read
    from policy_export.parity_report import per_dim_lines, render_table, write_json, write_junit
    from policy_export.verify import verify_artifacts

    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    if rollout and rollout < 2:
        raise typer.BadParameter(f"--rollout takes the number of control steps (>= 2), got {rollout}")
    overrides = _parse_atol_overrides(artifact_tolerance or [])
    inputs = files_read(checkpoint, artifact)
    for out, what in ((report, "JSON report"), (junit, "JUnit report")):
        if out is not None:
            check_report_writable(out, force, what, inputs)  # fail now, not after the whole run
    ckpt = load(checkpoint)
    total = len(artifact) * len(sizes) * samples
    if rollout:
        from policy_export.rollout import rollout_modes

        total += len(artifact) * len(rollout_modes(ckpt)) * len(sizes) * rollout
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("verifying", total=total)
        result = verify_artifacts(
            ckpt,
            list(artifact),
            batch_sizes=sizes,
            samples=samples,
            atol=tolerance,
            rtol=rtol,
            seed=seed,
            ort_provider=ort_provider.value,
            per_artifact_atol=overrides,
            rollout_steps=rollout or 0,
            progress=lambda: progress.advance(task),
            allow_other_checkpoint=allow_other_checkpoint,
            tolerance_space=tolerance_space,
            tolerance_std=tolerance_std,
        )
    console.print(render_table(result))
    for line in per_dim_lines(result):
        console.print(escape(line), soft_wrap=True)
    for c in result.checks:
        for w in c.warnings:
            console.print(f"[yellow]warning[/] {escape(Path(c.artifact).name)}: {escape(w)}")
    if report:
        write_json(result, report, force)
        console.print(f"wrote {escape(str(report))} (JSON report)", soft_wrap=True)
    if junit:
        write_junit(result, junit, force)
        console.print(f"wrote {escape(str(junit))} (JUnit report)", soft_wrap=True)
    colour = {"passed": "green", "failed": "red"}.get(result.status, "yellow")
    console.print(f"[bold {colour}]parity {result.status}[/] (exit {result.exit_code})")
    exit_with(result.exit_code)
