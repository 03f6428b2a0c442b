"""``policy-export demo``: the whole pipeline on a built-in demo checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, exit_with, handle_errors, load, status


@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option(help="Folder for the demo checkpoint, artifacts and reports.")] = Path(
        "demo-output"
    ),
    force: Annotated[bool, typer.Option("--force", help="Rebuild the checkpoint and overwrite artifacts.")] = False,
) -> None:
    """Build a demo ACT checkpoint (1 camera 3x480x640, 8-dim state, chunk 100), export ONNX, verify, summarize."""
    from policy_export.demo import build_checkpoint
    from policy_export.export.onnx import export_onnx
    from policy_export.parity_report import render_table, write_json, write_junit
    from policy_export.verify import verify_artifacts

    ckpt_dir = out_dir / "checkpoint" / "pretrained_model"
    if force or not (ckpt_dir / "model.safetensors").exists():
        with status("building demo checkpoint (random weights, plausible stats)"):
            build_checkpoint(ckpt_dir)
        console.print(f"[green]built[/] demo checkpoint {ckpt_dir}")
    ckpt = load(ckpt_dir)
    onnx_path = out_dir / "act_demo.onnx"
    if force or not onnx_path.exists():
        with status("exporting ONNX"):
            res = export_onnx(ckpt, onnx_path, force=force)
        console.print(f"[green]exported[/] {onnx_path} ({res.exporter} exporter, opset {res.opset}, {res.nodes} nodes)")
    with status("verifying against LeRobot eager at batch 1 and 4"):
        report = verify_artifacts(ckpt, [onnx_path], batch_sizes=[1, 4], samples=2)
    console.print(render_table(report))
    write_json(report, out_dir / "parity.json", force)
    write_junit(report, out_dir / "parity.xml", force)
    worst = max((r.stats.max_abs for c in report.checks for r in c.results), default=float("nan"))
    summary = {
        "checkpoint": str(ckpt_dir),
        "artifact": str(onnx_path),
        "status": report.status,
        "worst_max_abs": worst,
        "report": str(out_dir / "parity.json"),
    }
    console.print(f"[bold]summary[/] {json.dumps(summary)}")
    exit_with(report.exit_code)
