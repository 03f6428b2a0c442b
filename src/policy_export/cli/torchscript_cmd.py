"""``policy-export torchscript``: export the stateless core to one TorchScript file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, ForceOpt, ImageFormatOpt, console, handle_errors, load, status
from policy_export.enums import ImageFormat


@handle_errors
def torchscript(
    checkpoint: CheckpointOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .pt file.")],
    image_format: ImageFormatOpt = ImageFormat.FLOAT32,
    force: ForceOpt = False,
) -> None:
    """Trace a checkpoint's stateless core to TorchScript (dynamic batch, fp32), check it and quick-verify it.

    The file loads with torch.jit.load alone (no lerobot, no policy-export) and is called positionally: state, then one image per camera in the policy's camera order.
    """
    from policy_export.export.torchscript import export_torchscript
    from policy_export.fsutil import check_writable
    from policy_export.input_files import files_read

    check_writable(output, force, "TorchScript file", inputs=files_read(checkpoint))  # before the slow load
    ckpt = load(checkpoint)
    with status(f"tracing {output.name}"):
        res = export_torchscript(ckpt, output, force=force, image_format=image_format)
    sizes = ", ".join(str(b) for b in res.checked_batches)
    console.print(
        f"[green]wrote[/] {res.path} ({res.path.stat().st_size / 1e6:.1f} MB, torch.jit.trace, {res.image_format} images); "
        f"saved file re-loaded and checked at batch {sizes}: max abs error {res.quick_check_max_abs:.2e}"
    )
