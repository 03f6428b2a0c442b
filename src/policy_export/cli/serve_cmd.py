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


@handle_errors
def serve(
    repo: Annotated[Path, typer.Option("--repo", help="Model repository folder (written by triton-repo).")],
    http_port: Annotated[int, typer.Option(help="HTTP/REST port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port on 127.0.0.1.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port on 127.0.0.1 (/metrics).")] = 8002,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for every model to be ready.")] = 180.0,
    venv: VenvOpt = None,
) -> None:
    """Serve a model repository with Triton (the nvidia-pytriton tritonserver, CPU) on 127.0.0.1 until Ctrl-C.

    The repository passes the offline check first. Endpoints are printed once every model is ready. Ctrl-C, SIGTERM and SIGHUP stop the server and remove its temporary folder, then exit 130, 143 or 129 (128 + the signal); a server that stops by itself passes its exit code on.
    """
    from policy_export.signals import Terminated
    from policy_export.triton.install import find_server
    from policy_export.triton.server import TritonServer, serve

    install = find_server(venv)
    check_repo(repo)
    check_ports({"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    server = TritonServer(
        repo=repo,
        install=install,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        startup_timeout_s=startup_timeout,
    )

    def ready(srv: TritonServer) -> None:
        console.print(
            f"[green]ready[/] in {srv.startup_seconds:.1f} s: grpc {srv.grpc_url}  http {srv.http_url}  "
            f"metrics {srv.metrics_url}  (Ctrl-C stops)",
            soft_wrap=True,
        )

    try:
        code = serve(server, ready)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP as Terminated: the normal way to stop
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        console.print(f"stopped ({how}): tritonserver and its temporary folder are gone")
        # 128 + the signal (130, 143, 129), as every command and the README's exit-code table say: a
        # supervisor can tell "stopped on request" from a server that exited by itself (its own code).
        raise typer.Exit(128 + signum) from None
    if code:
        console.print(f"tritonserver exited by itself with code {code}; last log lines:\n{server.final_log}")
        raise typer.Exit(code)
