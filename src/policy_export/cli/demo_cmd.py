"""``policy-export demo``: the whole pipeline on a built-in demo checkpoint."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, exit_with, handle_errors, load, status


class DemoFamily(StrEnum):
    act = "act"
    diffusion = "diffusion"
    smolvla = "smolvla"
    pi05 = "pi05"
    pi0 = "pi0"


@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option(help="Folder for the demo checkpoint, artifacts and reports.")] = Path(
        "demo-output"
    ),
    family: Annotated[
        DemoFamily,
        typer.Option(
            help="act: LeRobot's default-size ACT (3x480x640 camera, chunk 100). diffusion: a small Diffusion "
            "Policy (96x96 camera, 10 DDIM steps). smolvla: LeRobot's default SmolVLA (450M parameters; "
            "SmolVLM2-500M's architecture built locally with random weights; minutes and ~10 GB to export). "
            "pi05 / pi0: LeRobot's pi0.5 / pi0 with a local PaliGemma tokenizer; only with --tiny here (test sizes)."
        ),
    ] = DemoFamily.act,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the checkpoint and overwrite artifacts.")] = False,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="With --family smolvla / pi05 / pi0: a toy-size model (seconds).")
    ] = False,
) -> None:
    """Build a demo checkpoint (random weights, plausible statistics), export ONNX, verify against LeRobot eager at batch 1 and 4, summarize.

    The families write side by side in --out-dir: ACT as checkpoint/, act_demo.onnx, parity.json/.xml; Diffusion as diffusion-checkpoint/, diffusion_demo.onnx, diffusion-parity.json/.xml; SmolVLA likewise with smolvla- (its VLM folder beside its checkpoint). Example: policy-export demo --family smolvla --tiny.
    """
    from policy_export.demo import SMALL_DIFFUSION_RECIPE, build_checkpoint, build_diffusion_checkpoint
    from policy_export.export.onnx import export_onnx
    from policy_export.parity_report import render_table, write_json, write_junit
    from policy_export.verify import verify_artifacts

    pi = family in (DemoFamily.pi05, DemoFamily.pi0)
    if tiny and family not in (DemoFamily.smolvla, DemoFamily.pi05, DemoFamily.pi0):
        from policy_export.errors import BadInputError

        raise BadInputError("--tiny applies to --family smolvla, pi05 and pi0 only")
    if pi and not tiny:
        from policy_export.errors import BadInputError

        raise BadInputError(
            f"--family {family.value} needs --tiny (the real sizes are 1.3B-3.3B parameters: see nox -s pi05_300m)"
        )
    prefix = "" if family is DemoFamily.act else f"{family.value}-"
    ckpt_dir = out_dir / f"{prefix}checkpoint" / "pretrained_model"
    if force or not (ckpt_dir / "model.safetensors").exists():
        with status(f"building a demo {family.value} checkpoint (random weights, plausible stats)"):
            if family is DemoFamily.act:
                build_checkpoint(ckpt_dir)
            elif family is DemoFamily.smolvla:
                from policy_export.demo_smolvla import DEFAULT_SMOLVLA, TINY_SMOLVLA, build_smolvla_checkpoint

                build_smolvla_checkpoint(ckpt_dir, TINY_SMOLVLA if tiny else DEFAULT_SMOLVLA)
            elif pi:
                from policy_export.demo_pi import TINY_PI0, TINY_PI05, build_pi_checkpoint

                build_pi_checkpoint(ckpt_dir, TINY_PI05 if family is DemoFamily.pi05 else TINY_PI0)
            else:
                build_diffusion_checkpoint(ckpt_dir, SMALL_DIFFUSION_RECIPE)
        console.print(f"[green]built[/] demo checkpoint {ckpt_dir}")
    ckpt = load(ckpt_dir)
    onnx_path = out_dir / f"{family.value}_demo.onnx"
    if force or not onnx_path.exists():
        with status("exporting ONNX"):
            res = export_onnx(ckpt, onnx_path, force=force)
        console.print(f"[green]exported[/] {onnx_path} ({res.exporter} exporter, opset {res.opset}, {res.nodes} nodes)")
    with status("verifying against LeRobot eager at batch 1 and 4"):
        report = verify_artifacts(ckpt, [onnx_path], batch_sizes=[1, 4], samples=2)
    console.print(render_table(report))
    json_path, junit_path = out_dir / f"{prefix}parity.json", out_dir / f"{prefix}parity.xml"
    write_json(report, json_path, force)
    write_junit(report, junit_path, force)
    worst = max((r.stats.max_abs for c in report.checks for r in c.results), default=float("nan"))
    summary = {
        "family": family.value,
        "checkpoint": str(ckpt_dir),
        "artifact": str(onnx_path),
        "status": report.status,
        "worst_max_abs": worst,
        "report": str(json_path),
    }
    console.print(f"[bold]summary[/] {json.dumps(summary)}")
    exit_with(report.exit_code)
