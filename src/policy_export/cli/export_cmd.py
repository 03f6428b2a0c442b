"""``policy-export export``: every format in one call, each verified against LeRobot eager."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from policy_export.cli.common import (
    CheckpointOpt,
    ForceOpt,
    ImageFormatOpt,
    console,
    exit_with,
    handle_errors,
    parse_int_list,
)
from policy_export.enums import ExportPrecision, ImageFormat, Precision

if TYPE_CHECKING:
    from rich.table import Table

    from policy_export.export_report import PipelineReport, Step

_STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow", "running": "cyan"}


@handle_errors
def export(
    checkpoint: CheckpointOpt,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for the artifacts and export-report.json.")],
    formats: Annotated[
        str,
        typer.Option(
            help="Comma-separated: onnx, torchscript, tensorrt (tensorrt is built from the ONNX and needs a GPU)."
        ),
    ] = "onnx,torchscript",
    image_format: ImageFormatOpt = ImageFormat.FLOAT32,
    precision: Annotated[
        ExportPrecision, typer.Option(help="For ONNX and TensorRT; TorchScript is always fp32.")
    ] = ExportPrecision.FP32,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes verify checks every artifact at.")] = "1,4",
    samples: Annotated[int, typer.Option(help="Random input draws per batch size.")] = 2,
    max_batch: Annotated[int, typer.Option(help="Largest batch of the TensorRT plan's profile.")] = 16,
    allow_unavailable: Annotated[
        bool,
        typer.Option(
            help="A format this machine cannot build (no GPU / TensorRT) is still reported as skipped, but does not make the exit code 2."
        ),
    ] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write verify's JUnit XML here.")] = None,
    force: ForceOpt = False,
) -> None:
    """Export every requested format, verify each against LeRobot eager, write <out-dir>/export-report.json.

    Exit code 0: everything built and passed; 1: a parity failure; 2: bad input, an error, or a requested format that could not be built here (see --allow-unavailable).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from policy_export.export_report import REPORT_NAME, parse_formats
    from policy_export.fsutil import check_report_writable
    from policy_export.pipeline import run_export_pipeline

    fmts = parse_formats(formats)
    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    if junit is not None:
        check_report_writable(junit, force, "JUnit report", [checkpoint])  # fail now, not after every export
    n_built_max = len(fmts)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        steps_task = progress.add_task("load checkpoint", total=2 + len(fmts) + n_built_max)
        verify_task = progress.add_task("verify (waiting)", total=n_built_max * len(sizes) * samples, visible=False)

        def on_step(st: Step) -> None:
            label = f"{st.name} {st.target}"
            if st.status == "running":
                progress.update(steps_task, description=label)
                if st.name == "verify":
                    progress.update(verify_task, visible=True, description="verify vs LeRobot eager")
                return
            progress.advance(steps_task)
            style = _STATUS_STYLE.get(st.status, "white")
            where = (
                f" -> {escape(st.artifact)}" if st.artifact and st.status == "passed" and st.name == "export" else ""
            )
            why = f": {escape(st.error)}" if st.error else ""
            progress.console.print(f"[{style}]{st.status:>7}[/] {label} ({st.duration_s:.1f} s){where}{why}")

        report = run_export_pipeline(
            checkpoint,
            out_dir,
            formats=fmts,
            image_format=image_format,
            precision=Precision(precision),
            batch_sizes=sizes,
            samples=samples,
            max_batch=max_batch,
            allow_unavailable=allow_unavailable,
            force=force,
            on_step=on_step,
            on_verify_progress=lambda: progress.advance(verify_task),
        )
    if report.verify is not None:
        from policy_export.parity_report import render_table, write_junit

        console.print(render_table(report.verify))
        if junit:
            write_junit(report.verify, junit, force)
    console.print(_summary_table(report))
    unbuilt = [s.target for s in report.steps if s.status == "skipped" and s.unavailable and s.name == "export"]
    if unbuilt and not allow_unavailable:
        console.print(
            f"[yellow]{', '.join(unbuilt)} could not be built on this machine; the run is incomplete. "
            "Build it on a host that has the runtime, drop it from --formats, or pass --allow-unavailable.[/]"
        )
    colour = {"passed": "green", "failed": "red"}.get(report.status, "yellow")
    console.print(
        f"[bold {colour}]export {report.status}[/] (exit {report.exit_code}); report: {out_dir / REPORT_NAME}"
    )
    exit_with(report.exit_code)


def _summary_table(report: PipelineReport) -> Table:
    from rich.table import Table

    table = Table(title=f"export summary - {report.out_dir}", title_justify="left")
    for col in ("format", "artifact", "precision", "export", "verify", "worst max abs", "atol", "note"):
        table.add_column(col)
    for fmt in report.formats:
        exp, ver = report.step("export", fmt), report.step("verify", fmt)
        details = ver.details if ver else {}
        worst = details.get("worst_max_abs")
        precision = (ver.details.get("precision") if ver else None) or (
            "fp32" if fmt == "torchscript" else report.precision
        )
        note = next((s.error for s in (exp, ver) if s and s.error), "") or ""
        table.add_row(
            fmt,
            Path(exp.artifact).name if exp and exp.artifact else "-",
            precision,
            _cell(exp),
            _cell(ver),
            f"{worst:.2e}" if isinstance(worst, float) and worst == worst else "-",
            f"{details['atol']:g} ({details.get('atol_source', '')})" if "atol" in details else "-",
            escape(note),
        )
    return table


def _cell(step: Step | None) -> str:
    if step is None:
        return "-"
    style = _STATUS_STYLE.get(step.status, "white")
    return f"[{style}]{step.status}[/] {step.duration_s:.1f} s"
