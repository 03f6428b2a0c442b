"""``policy-export serve``: a model repository served by the real tritonserver, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, handle_errors

VenvOpt = Annotated[
    Path | None,
    typer.Option(
        "--venv",
        help="The server's virtualenv (`make triton-venv`). Default: $POLICY_EXPORT_TRITON_VENV, else the first "
        ".venv-triton found in the current folder, the project's folder, beside the venv running policy-export.",
        show_default=False,
    ),
]


def check_ports(ports: dict[str, int]) -> None:
    """Every port free and distinct, or one line naming the option to change."""
    from policy_export.errors import BadInputError
    from policy_export.triton.server import port_in_use

    seen: dict[int, str] = {}
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise BadInputError(f"{option} {port}: give a TCP port between 1 and 65535")
        if port in seen:
            raise BadInputError(f"{option} {port} is also {seen[port]}: give each endpoint its own port")
        seen[port] = option
        if port_in_use(port):
            raise BadInputError(f"{option} {port}: 127.0.0.1:{port} is already in use; pick a free port with {option}")


def check_repo(repo: Path) -> None:
    """The offline ``triton-repo --check``, summarised in one line: a config the server would refuse
    is cheaper to report now than after tritonserver has spent seconds loading the others."""
    from policy_export.errors import BadInputError
    from policy_export.triton.validate import check_repository

    if not repo.is_dir():
        raise BadInputError(f"{repo}: model repository folder does not exist")
    reports = check_repository(repo)
    bad = [r for r in reports if not r.ok]
    if bad:
        first = bad[0]
        raise BadInputError(
            f"{first.path / 'config.pbtxt'}: {first.problems[0]}"
            + (f" (and {len(bad) - 1} more model(s))" if len(bad) > 1 else "")
            + f"; run `policy-export triton-repo --check {repo}` for every problem"
        )


def check_remote_repo(repo: str, endpoint: str | None) -> tuple[str, list[str]]:
    """An ``s3://`` repository checked like a folder (one line on failure): Triton's URL for it and its models."""
    from policy_export.errors import BadInputError
    from policy_export.triton.s3 import S3Location, check_remote

    loc = S3Location.parse(repo, endpoint)
    reports = check_remote(loc)
    bad = [r for r in reports if not r.ok]
    if bad:
        raise BadInputError(
            f"{loc.url}/{bad[0].name}: {bad[0].problems[0]}"
            + (f" (and {len(bad) - 1} more model(s))" if len(bad) > 1 else "")
            + f"; run `policy-export triton-repo --check {repo}` for every problem"
        )
    return loc.triton_url(), [r.name for r in reports]


@handle_errors
def serve(
    repo: Annotated[
        str,
        typer.Option(
            "--repo", help="Model repository folder (written by triton-repo), or s3://bucket/prefix in object storage."
        ),
    ],
    http_port: Annotated[int, typer.Option(help="HTTP/REST port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port on 127.0.0.1.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port on 127.0.0.1 (/metrics).")] = 8002,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for every model to be ready.")] = 180.0,
    venv: VenvOpt = None,
    model_control: Annotated[
        str | None,
        typer.Option(
            help="Triton's model control mode: none (load everything at start) or explicit (load the repository's "
            "models at start, later loads only through the load API: what `policy-export upgrade` uses). "
            "Default: explicit for s3:// repositories, none for folders.",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int,
        typer.Option(help="Serve this many tritonserver replicas; replica i listens on each port + 3*i."),
    ] = 1,
    s3_endpoint: Annotated[
        str | None,
        typer.Option("--s3-endpoint", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL).", show_default=False),
    ] = None,
) -> None:
    """Serve a model repository with Triton (the nvidia-pytriton tritonserver, CPU) on 127.0.0.1 until Ctrl-C.

    The repository passes the offline check first. Endpoints are printed once every model is ready. Ctrl-C, SIGTERM and SIGHUP stop the server and remove its temporary folder, then exit 130, 143 or 129 (128 + the signal); a server that stops by itself passes its exit code on.
    """
    import os

    from policy_export.errors import BadInputError
    from policy_export.signals import Terminated
    from policy_export.triton.install import find_server
    from policy_export.triton.s3 import is_s3
    from policy_export.triton.server import TritonServer, serve_many

    if model_control not in (None, "none", "explicit"):
        raise BadInputError(f"--model-control {model_control!r}: use none or explicit")
    if not 1 <= replicas <= 16:
        raise BadInputError(f"--replicas {replicas}: give 1 to 16")
    install = find_server(venv)
    where: Path | str
    if is_s3(repo):
        endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        where, models = check_remote_repo(repo, endpoint)
        control = model_control or "explicit"
    else:
        where = Path(repo)
        check_repo(where)
        models = sorted(p.name for p in where.iterdir() if (p / "config.pbtxt").is_file())
        control = model_control or "none"
    extra: tuple[str, ...] = ()
    if control == "explicit":
        extra = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in models))
    ports = {}
    for i in range(replicas):
        suffix = f" (replica {i + 1})" if i else ""
        ports.update(
            {
                f"--http-port{suffix}": http_port + 3 * i,
                f"--grpc-port{suffix}": grpc_port + 3 * i,
                f"--metrics-port{suffix}": metrics_port + 3 * i,
            }
        )
    check_ports(ports)
    servers = [
        TritonServer(
            repo=where,
            install=install,
            http_port=http_port + 3 * i,
            grpc_port=grpc_port + 3 * i,
            metrics_port=metrics_port + 3 * i,
            startup_timeout_s=startup_timeout,
            extra_args=extra,
        )
        for i in range(replicas)
    ]

    def ready(started: list[TritonServer]) -> None:
        for srv in started:
            console.print(
                f"[green]ready[/] in {srv.startup_seconds:.1f} s: grpc {srv.grpc_url}  http {srv.http_url}  "
                f"metrics {srv.metrics_url}  model control {control}  (Ctrl-C stops)",
                soft_wrap=True,
            )
        if len(started) > 1:
            console.print(f"replicas: {','.join(s.grpc_url for s in started)}", soft_wrap=True)

    try:
        code = serve_many(servers, ready)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP as Terminated: the normal way to stop
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        console.print(f"stopped ({how}): tritonserver and its temporary folder are gone")
        # 128 + the signal (130, 143, 129), as every command and the README's exit-code table say: a
        # supervisor can tell "stopped on request" from a server that exited by itself (its own code).
        raise typer.Exit(128 + signum) from None
    if code:
        log = next((s.final_log for s in servers if s.exit_code), "")
        console.print(f"tritonserver exited by itself with code {code}; last log lines:\n{log}")
        raise typer.Exit(code)
