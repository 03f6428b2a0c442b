"""``policy-export inspect``: what a checkpoint expects and produces."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, console, handle_errors, load


@handle_errors
def inspect(
    checkpoint: CheckpointOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show policy type, features and shapes, cameras, chunking and normalization of a checkpoint."""
    from rich.table import Table

    from policy_export.families import family_for

    ckpt = load(checkpoint)
    spec = ckpt.spec
    if as_json:
        console.print_json(json.dumps(spec.to_dict()))
        return
    t = Table(title=f"{checkpoint}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("policy type", spec.policy_type)
    t.add_row("state", f"{spec.state_key} [{spec.state_dim}] -> input 'state'  ({spec.normalization[spec.state_key]})")
    for cam in spec.cameras:
        t.add_row("camera", f"{cam.key} {list(cam.shape)} -> input '{cam.input_name}'  ({spec.normalization[cam.key]})")
    t.add_row(
        "action",
        f"{spec.action_key} [{spec.action_dim}] -> output 'action_chunk' [B, {spec.chunk_size}, {spec.action_dim}]  ({spec.normalization[spec.action_key]})",
    )
    t.add_row("chunk_size", str(spec.chunk_size))
    t.add_row("n_action_steps", str(spec.n_action_steps))
    if spec.n_obs_steps is not None:
        t.add_row("n_obs_steps", f"{spec.n_obs_steps} (inputs carry [B, {spec.n_obs_steps}, ...] history)")
    for noise in spec.noise_inputs:
        t.add_row(
            "noise input", f"'{noise.name}' [B, {', '.join(map(str, noise.shape))}] standard normal, drawn by the host"
        )
    for name, value in family_for(spec.policy_type).describe(spec):
        t.add_row(name, value)
    t.add_row("normalization hash", spec.norm_hash)
    console.print(t)
