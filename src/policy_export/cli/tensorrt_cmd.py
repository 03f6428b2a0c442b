"""``policy-export tensorrt``: build a TensorRT plan from an exported ONNX file (GPU hosts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import ForceOpt, console, handle_errors, status
from policy_export.enums import ExportPrecision, Precision


@handle_errors
def tensorrt(
    onnx: Annotated[
        Path, typer.Option("--onnx", help="ONNX file written by `policy-export onnx` (fp32, or fp16 for an fp16 plan).")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the .plan; <plan>.json is written beside it.")
    ],
    precision: Annotated[
        ExportPrecision,
        typer.Option(help="fp32 (TF32 off) or fp16 (network converted to fp16 inside, float32 inputs/outputs)."),
    ] = ExportPrecision.FP32,
    min_batch: Annotated[int, typer.Option(help="Smallest batch the plan accepts.")] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch size TensorRT tunes kernels for.")] = 4,
    max_batch: Annotated[int, typer.Option(help="Largest batch the plan accepts.")] = 16,
    workspace: Annotated[
        str | None, typer.Option(help="Builder workspace memory limit, e.g. 4G or 512M (default: TensorRT's).")
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option(help="Tactic timing cache to read and update (speeds up rebuilds).")
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Build a TensorRT engine with one optimization profile on the batch axis, plus a JSON sidecar.

    Needs an NVIDIA GPU and the tensorrt package; elsewhere it exits 2 with the reason. The plan only runs on the GPU model and TensorRT version it was built with.
    """
    from policy_export.export.tensorrt import build_tensorrt, parse_size

    with status(f"building {output.name} with TensorRT ({precision.value})"):
        res = build_tensorrt(
            onnx,
            output,
            precision=Precision(precision),
            min_batch=min_batch,
            opt_batch=opt_batch,
            max_batch=max_batch,
            workspace=parse_size(workspace) if workspace else None,
            timing_cache=timing_cache,
            force=force,
        )
    h = res.host
    console.print(
        f"[green]wrote[/] {res.path} ({res.path.stat().st_size / 1e6:.1f} MB, {res.precision}, batch "
        f"{res.profile['min']}..{res.profile['max']} opt {res.profile['opt']}, built in {res.build_seconds:.0f} s on "
        f"{h['gpu_name']} sm {h['compute_capability']} with TensorRT {h['tensorrt_version']}) and {res.sidecar.name}; "
        f"quick check vs ONNX Runtime max abs error {res.quick_check_max_abs:.2e}"
    )
