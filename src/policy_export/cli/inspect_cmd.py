"""``policy-export inspect``: what a checkpoint expects and produces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, handle_errors, load


@handle_errors
def inspect(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="LeRobot 'pretrained_model' directory (config.json, model.safetensors, processors).",
            show_default=False,
        ),
    ] = None,
    artifact: Annotated[
        Path | None,
        typer.Option(
            "--artifact",
            "-a",
            help="Instead: an exported file (.onnx, .pt, .plan, .xml): its recorded policy, signature and files.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Show policy type, features and shapes, cameras, chunking and normalization of a checkpoint (or of an exported artifact, with --artifact)."""
    from rich.table import Table

    from policy_export.declarations import declaration_for
    from policy_export.errors import BadInputError
    from policy_export.spec import OBSERVATION_ROLES

    if (checkpoint is None) == (artifact is None):
        raise BadInputError("give --checkpoint DIR or --artifact FILE (one of the two)")
    extra: list[tuple[str, str]] = []
    if artifact is not None:
        from policy_export.artifacts import inspect_artifact
        from policy_export.input_files import artifact_files

        info = inspect_artifact(artifact)
        meta = info.metadata
        spec = meta.spec
        if as_json:
            console.print_json(meta.to_json())
            return
        extra = [
            ("artifact", f"{meta.artifact_kind}, {meta.precision}, {meta.image_format} images, {meta.exporter}"),
            ("files", ", ".join(str(f.name) for f in artifact_files(artifact))),
        ]
    else:
        assert checkpoint is not None
        spec = load(checkpoint).spec
        if as_json:
            console.print_json(json.dumps(spec.to_dict()))
            return
    t = Table(title=f"{artifact or checkpoint}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("policy type", spec.policy_type)
    for name, value in extra:
        t.add_row(name, value)
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
            f"{spec.action_key} [{spec.action_dim}] -> output '{out.name}' [{shape}]  ({spec.normalization.get(spec.action_key, '?')})",
        )
    t.add_row("chunk_size", str(spec.chunk_size))
    t.add_row("n_action_steps", str(spec.n_action_steps))
    host = spec.host
    t.add_row("host", host.merge + (f", history of {host.history} observations" if host.history is not None else ""))
    for name, value in declaration_for(spec.policy_type).describe(spec):
        t.add_row(name, value)
    t.add_row("normalization hash", spec.norm_hash)
    console.print(t)
