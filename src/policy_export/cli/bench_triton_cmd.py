"""``policy-export bench-triton``: start-up time and batch-1 request latency of a real Triton server."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, handle_errors
from policy_export.cli.serve_cmd import VenvOpt


class ServerBackend(StrEnum):
    auto = "auto"
    python = "python"


@handle_errors
def bench_triton(
    artifact: Annotated[
        list[Path], typer.Option("--artifact", "-a", help="Exported artifact (repeatable).", show_default=False)
    ],
    backend: Annotated[ServerBackend, typer.Option(help="Triton backend the repository is written for.")] = (
        ServerBackend.auto
    ),
    requests: Annotated[int, typer.Option(help="Timed requests per protocol.")] = 50,
    venv: VenvOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
) -> None:
    """Serve each artifact (default triton-repo options) and time sequential batch-1 requests over HTTP, gRPC and in-process ONNX Runtime, interleaved.

    A benchmark: it prints a table and writes JSON; the three columns are interleaved request by request so other load on the machine affects them alike.
    """
    from policy_export.errors import BadInputError
    from policy_export.fsutil import check_writable, write_text_atomic
    from policy_export.input_files import files_read
    from policy_export.triton.latency import measure, render_table

    if requests < 1:
        raise BadInputError(f"--requests must be >= 1, got {requests}")
    if json_path:
        # An input is never overwritten.
        check_writable(json_path, True, "JSON report", inputs=files_read(None, artifact))
    rows = measure(artifact, backend.value, requests, venv)
    console.print(render_table(rows))
    if json_path:
        write_text_atomic(json_path, json.dumps(rows, indent=2) + "\n", inputs=files_read(None, artifact))
        console.print(f"wrote {json_path}")
