"""``policy-export triton-repo``: write a versioned Triton model repository, or check one offline."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from policy_export.cli.common import ForceOpt, console, err_console, handle_errors, parse_int_list
from policy_export.enums import Precision
from policy_export.errors import BadInputError


class BackendChoice(StrEnum):
    """--backend: the Triton backend to serve an artifact with (auto: its native one)."""

    auto = "auto"
    python = "python"


class Kind(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


@handle_errors
def triton_repo(
    artifact: Annotated[
        Path | None, typer.Option("--artifact", "-a", help="Exported file: .onnx, TorchScript .pt, or TensorRT .plan.")
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="Model repository folder (created if missing), or s3://bucket/prefix in object storage "
            "(boto3 and the usual AWS_* environment; see --s3-endpoint).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--model", "-m", help="Model name (the folder under --repo).")] = None,
    version: Annotated[int, typer.Option("--version", help="Version folder to write (integer >= 1).")] = 1,
    backend: Annotated[
        BackendChoice | None,
        typer.Option(
            help="auto: the artifact's native backend (onnxruntime_onnx, tensorrt_plan, pytorch_libtorch, openvino). "
            "python: serve an ONNX file through ONNX Runtime, or an OpenVINO IR through OpenVINO, from Triton's "
            "Python backend."
        ),
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Largest batch Triton forms (>= 1; default 8).")] = None,
    preferred_batch_sizes: Annotated[
        str | None,
        typer.Option(help="Dynamic batcher's preferred sizes, comma-separated, each <= max batch size."),
    ] = None,
    max_queue_delay_us: Annotated[
        int | None,
        typer.Option(
            help="How long the dynamic batcher may hold a request to fill a batch (microseconds; default 500)."
        ),
    ] = None,
    instance_count: Annotated[int | None, typer.Option(help="Model instances per device (default 1).")] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="Instance kind. Default: gpu for TensorRT plans, cpu otherwise.")
    ] = None,
    warmup: Annotated[
        bool | None,
        typer.Option(
            "--warmup/--no-warmup", help="Warm up with random data at batch 1 and the max batch (default on)."
        ),
    ] = None,
    version_policy: Annotated[
        str | None,
        typer.Option(help="Which versions Triton serves: latest:N, all, or specific:1,2 (default latest:1)."),
    ] = None,
    ort_trt: Annotated[
        Precision | None,
        typer.Option(help="ONNX models on GPU: enable ONNX Runtime's TensorRT accelerator at this precision."),
    ] = None,
    intra_op_threads: Annotated[
        int | None,
        typer.Option(
            help="--backend python: ONNX Runtime intra-op threads per instance (default: ONNX Runtime's); "
            "OpenVINO models: INFERENCE_NUM_THREADS."
        ),
    ] = None,
    force: ForceOpt = False,
    lock_wait: Annotated[
        float,
        typer.Option(help="Seconds to wait while another triton-repo write to the same model runs (0: fail at once)."),
    ] = 300.0,
    check: Annotated[
        str | None,
        typer.Option(
            "--check",
            help="Only validate an existing repository (or one model folder) offline, then exit; s3://bucket/prefix "
            "checks a repository in object storage.",
        ),
    ] = None,
    lock_ttl: Annotated[
        float,
        typer.Option(
            help="s3:// repositories: seconds after which a dead writer's lock object may be taken over "
            "(refreshed while a write runs).",
        ),
    ] = 120.0,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write ARTIFACT as version N of model NAME in a Triton repository (config.pbtxt generated and checked), or validate a repository offline with --check DIR.

    All versions of a model share one config.pbtxt. A serving option not given here keeps the value the model's config already has (the default for a new model), so adding a version never silently changes how the versions already there are served.
    """
    if check is not None:
        if artifact or repo or name:
            raise BadInputError("--check takes only a folder; drop --artifact/--repo/--model")
        from policy_export.triton.s3 import is_s3

        if is_s3(check):
            _check_s3(check, s3_endpoint)
        else:
            _check(Path(check))
        return
    missing = [opt for opt, value in (("--artifact", artifact), ("--repo", repo), ("--model", name)) if value is None]
    if missing:
        raise BadInputError(f"missing {', '.join(missing)} (or use --check DIR to validate a repository)")
    assert artifact is not None and repo is not None and name is not None

    # Only what was given on this command line: the rest comes from the model's existing config.
    given = {
        "backend": backend,
        "max_batch_size": max_batch_size,
        "preferred_batch_sizes": tuple(parse_int_list(preferred_batch_sizes, "--preferred-batch-sizes"))
        if preferred_batch_sizes is not None
        else None,
        "max_queue_delay_us": max_queue_delay_us,
        "instance_count": instance_count,
        "kind": kind,
        "warmup": warmup,
        "version_policy": version_policy,
        "ort_trt": ort_trt,
        "intra_op_threads": intra_op_threads,
    }
    options = {k: v.value if isinstance(v, StrEnum) else v for k, v in given.items() if v is not None}
    from policy_export.triton.s3 import is_s3

    if is_s3(repo):
        _write_s3(artifact, repo, s3_endpoint, name, version, options, force, lock_wait, lock_ttl)
        return
    from policy_export.triton.repo import write_version

    res = write_version(
        artifact,
        Path(repo),
        name,
        version,
        options,
        force=force,
        lock_wait_s=lock_wait,
        on_wait=lambda message: err_console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True),
    )
    verb = "replaced" if res.replaced else "wrote"
    console.print(f"[green]{verb}[/] {name} version {res.version} ({res.backend}) in {res.model_dir}")
    for f in res.files:
        console.print(f"  {f}")
    console.print(
        f"  inputs: {', '.join(t.describe() for t in res.signature.inputs)}; "
        f"outputs: {', '.join(t.describe() for t in res.signature.outputs)}"
    )
    console.print(
        f"offline check ok: versions {', '.join(map(str, res.versions))}, version policy {res.options.version_policy}"
    )


def _check(path: Path) -> None:
    from policy_export.triton.validate import check_repository

    reports = check_repository(path)
    bad = 0
    for r in reports:
        if r.ok:
            versions = ", ".join(map(str, r.versions))
            console.print(f"[green]ok[/] {r.path}: {r.backend}, versions {versions}")
            continue
        bad += 1
        for problem in r.problems:
            err_console.print(f"[bold red]error:[/] {r.path / 'config.pbtxt'}: {problem}", soft_wrap=True)
    if bad:
        raise BadInputError(f"{path}: {bad} of {len(reports)} model(s) failed the offline check (see above)")
    console.print(f"{len(reports)} model(s) ok")


def _endpoint(given: str | None) -> str | None:
    import os

    return given or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _write_s3(
    artifact: Path,
    repo: str,
    endpoint: str | None,
    name: str,
    version: int,
    options: Mapping[str, object],
    force: bool,
    lock_wait: float,
    lock_ttl: float,
) -> None:
    from policy_export.triton.s3 import S3Location, write_version_s3

    loc = S3Location.parse(repo, _endpoint(endpoint))
    res = write_version_s3(
        artifact,
        loc,
        name,
        version,
        options,
        force=force,
        lock_wait_s=lock_wait,
        lock_ttl_s=lock_ttl,
        on_wait=lambda message: err_console.print(f"[yellow]{escape(message)}[/]", soft_wrap=True),
    )
    console.print(f"[green]published[/] {name} version {res.version} ({res.backend}) in {loc.url}", soft_wrap=True)
    for key in res.files:
        console.print(f"  s3://{loc.bucket}/{key}", soft_wrap=True)
    if res.removed_debris:
        console.print(f"  removed {len(res.removed_debris)} object(s) a killed writer left (never served)")
    console.print(
        f"offline check ok: versions {', '.join(map(str, res.versions))}; served (policy {res.user_policy}): "
        f"{', '.join(map(str, res.serving))}; tritonserver --model-repository={loc.triton_url()}",
        soft_wrap=True,
    )


def _check_s3(url: str, endpoint: str | None) -> None:
    from policy_export.triton.s3 import S3Location, check_remote

    loc = S3Location.parse(url, _endpoint(endpoint))
    reports = check_remote(loc)
    bad = 0
    for r in reports:
        for warning in r.warnings:
            err_console.print(f"[yellow]warning:[/] {loc.url}/{r.name}: {escape(warning)}", soft_wrap=True)
        if r.ok:
            serving = f"; served {', '.join(map(str, r.serving))}" if r.serving else ""
            console.print(
                f"[green]ok[/] {loc.url}/{r.name}: {r.backend}, versions {', '.join(map(str, r.committed))}{serving}",
                soft_wrap=True,
            )
            continue
        bad += 1
        for problem in r.problems:
            err_console.print(f"[bold red]error:[/] {loc.url}/{r.name}: {escape(problem)}", soft_wrap=True)
    if bad:
        raise BadInputError(f"{loc.url}: {bad} of {len(reports)} model(s) failed the check (see above)")
    console.print(f"{len(reports)} model(s) ok")
