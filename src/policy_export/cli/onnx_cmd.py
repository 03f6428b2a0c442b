"""``policy-export onnx``: export the stateless core to one ONNX file."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, ForceOpt, ImageFormatOpt, console, handle_errors, load, status
from policy_export.enums import ExportPrecision, ImageFormat, Precision


class Exporter(StrEnum):
    auto = "auto"
    dynamo = "dynamo"
    legacy = "legacy"


@handle_errors
def onnx(
    checkpoint: CheckpointOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default 20; dynamo needs >= 18).")] = None,
    exporter: Annotated[
        Exporter, typer.Option(help="auto tries dynamo, then falls back to legacy with a logged reason.")
    ] = Exporter.auto,
    precision: Annotated[
        ExportPrecision, typer.Option(help="fp16 converts the network inside; inputs/outputs stay float32.")
    ] = ExportPrecision.FP32,
    image_format: ImageFormatOpt = ImageFormat.FLOAT32,
    force: ForceOpt = False,
) -> None:
    """Export a checkpoint's stateless core to ONNX (dynamic batch), check it and quick-verify it."""
    from rich.markup import escape

    from policy_export.export.onnx import export_onnx
    from policy_export.fsutil import check_writable
    from policy_export.input_files import files_read

    check_writable(output, force, "ONNX file", inputs=files_read(checkpoint))  # before the slow load
    ckpt = load(checkpoint)
    with status(f"exporting {output.name}"):
        res = export_onnx(
            ckpt,
            output,
            opset=opset,
            exporter=exporter.value,
            force=force,
            image_format=image_format,
            precision=Precision(precision),
        )
    if res.fallback_reason:
        console.print(f"[yellow]used the legacy exporter: {escape(res.fallback_reason)}[/]")
    console.print(
        f"[green]wrote[/] {res.path} ({res.path.stat().st_size / 1e6:.1f} MB, {res.nodes} nodes, {res.exporter} exporter, "
        f"opset {res.opset}, {precision.value}); ONNX checker ok; quick parity max abs error {res.quick_check_max_abs:.2e}"
    )
    if res.external_data is not None:
        size = res.external_data.stat().st_size / 1e6
        console.print(f"weights in {res.external_data} ({size:.1f} MB, over protobuf's 2 GB limit): keep it beside the file")
