"""``policy-export upgrade``: roll a model version out across Triton replicas, one at a time."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from policy_export.cli.common import console, handle_errors


@handle_errors
def upgrade(
    url: Annotated[
        str,
        typer.Option(
            "--triton-url", help="The replicas' gRPC addresses, comma-separated (host:port,host:port), in rollout order."
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name in the repository.")],
    version: Annotated[int, typer.Option("--version", help="The version to roll out; the repository must hold it.")],
    repo: Annotated[
        str,
        typer.Option(
            "--repo", help="The repository the replicas serve (folder or s3://bucket/prefix): its config is loaded."
        ),
    ],
    s3_endpoint: Annotated[
        str | None,
        typer.Option("--s3-endpoint", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL).", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds one replica may take to load the version.")] = 300.0,
) -> None:
    """Load VERSION of MODEL on each replica (beside what it serves), wait until it is ready and is the repository's file, then unload the old versions there; one replica at a time, so the others keep serving.

    The servers must run with --model-control-mode=explicit (policy-export serve does for s3:// repositories, or with --model-control explicit). Clients pinned to an old version fail over to replicas not upgraded yet, then hold; clients following the newest (MODEL_VERSION=latest) switch once their replica serves VERSION.
    """
    import os

    from policy_export.errors import BadInputError
    from policy_export.fleet.upgrade import read_repo_model
    from policy_export.fleet.upgrade import upgrade as roll

    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise BadInputError("--triton-url: give at least one replica (host:port, comma-separated)")
    if len(set(urls)) != len(urls):
        raise BadInputError(f"--triton-url {url}: a replica is named twice")
    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    held = read_repo_model(repo, model, endpoint)
    steps = roll(
        urls, model, version, held, timeout_s=timeout, on_step=lambda m: console.print(escape(m), soft_wrap=True)
    )
    console.print(f"[green]upgraded[/] {model} to version {version} on {len(steps)} replica(s)")
