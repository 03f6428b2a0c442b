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

    from policy_export.declarations import declaration_for
    from policy_export.spec import OBSERVATION_ROLES

    ckpt = load(checkpoint)
    spec = ckpt.spec
    if as_json:
        console.print_json(json.dumps(spec.to_dict()))
        return
    t = Table(title=f"{checkpoint}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("policy type", spec.policy_type)
    sig = spec.signature
    for inp in sig.inputs:  # each input as its family declared it
        shape = ", ".join("B" if d == "batch" else str(d) for d in sig.resolve(inp))
        source = f"{inp.key} " if inp.key else ""
        norm = f"  ({spec.normalization[inp.key]})" if inp.key in spec.normalization else ""
        made = "" if inp.role in OBSERVATION_ROLES else ", made by the host"
        units = f" {inp.units}" if inp.units else ""
        t.add_row(str(inp.role), f"{source}-> input '{inp.name}' {inp.dtype} [{shape}]{units}{made}{norm}")
    for out in sig.outputs:
        shape = ", ".join("B" if d == "batch" else str(d) for d in sig.resolve(out))
        t.add_row(
            "action",
            f"{spec.action_key} [{spec.action_dim}] -> output '{out.name}' [{shape}]  ({spec.normalization[spec.action_key]})",
        )
    t.add_row("chunk_size", str(spec.chunk_size))
    t.add_row("n_action_steps", str(spec.n_action_steps))
    host = spec.host
    t.add_row("host", host.merge + (f", history of {host.history} observations" if host.history is not None else ""))
    for name, value in declaration_for(spec.policy_type).describe(spec):
        t.add_row(name, value)
    t.add_row("normalization hash", spec.norm_hash)
    console.print(t)
