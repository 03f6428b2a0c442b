"""The ``policy-export`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from policy_export import __version__
from policy_export.cli import (
    bench_cmd,
    bench_fleet_cmd,
    bench_realtime_cmd,
    bench_shim_cmd,
    bench_triton_cmd,
    demo_cmd,
    eval_cmd,
    export_cmd,
    inspect_cmd,
    k8s_cmd,
    onnx_cmd,
    quantize_cmd,
    serve_cmd,
    tensorrt_cmd,
    torchscript_cmd,
    triton_cmd,
    upgrade_cmd,
    verify_cmd,
)
from policy_export.cli.common import Command, set_debug
from policy_export.cli.examples import epilog

app = typer.Typer(
    name="policy-export",
    help="Export LeRobot policies to stateless, verified ONNX / TorchScript / TensorRT artifacts and Triton repositories.\n\n"
    "Exit codes: 0 success, 1 parity check failed, 2 bad usage or bad input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"policy-export {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks (or set POLICY_EXPORT_DEBUG=1).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    set_debug(debug)


app.command("inspect", cls=Command, epilog=epilog("inspect"))(inspect_cmd.inspect)
app.command("onnx", cls=Command, epilog=epilog("onnx"))(onnx_cmd.onnx)
app.command("verify", cls=Command, epilog=epilog("verify"))(verify_cmd.verify)
app.command("eval", cls=Command, epilog=epilog("eval"))(eval_cmd.eval_)
app.command("torchscript", cls=Command, epilog=epilog("torchscript"))(torchscript_cmd.torchscript)
app.command("tensorrt", cls=Command, epilog=epilog("tensorrt"))(tensorrt_cmd.tensorrt)
app.command("quantize", cls=Command, epilog=epilog("quantize"))(quantize_cmd.quantize)
app.command("export", cls=Command, epilog=epilog("export"))(export_cmd.export)
app.command("demo", cls=Command, epilog=epilog("demo"))(demo_cmd.demo)
app.command("triton-repo", cls=Command, epilog=epilog("triton-repo"))(triton_cmd.triton_repo)
app.command("bench", cls=Command, epilog=epilog("bench"))(bench_cmd.bench)
app.command("bench-shim", cls=Command, epilog=epilog("bench-shim"))(bench_shim_cmd.bench_shim)
app.command("serve", cls=Command, epilog=epilog("serve"))(serve_cmd.serve)
app.command("k8s", cls=Command, epilog=epilog("k8s"))(k8s_cmd.k8s)
app.command("upgrade", cls=Command, epilog=epilog("upgrade"))(upgrade_cmd.upgrade)
app.command("bench-triton", cls=Command, epilog=epilog("bench-triton"))(bench_triton_cmd.bench_triton)
app.command("bench-fleet", cls=Command, epilog=epilog("bench-fleet"))(bench_fleet_cmd.bench_fleet)
app.command("bench-realtime", cls=Command, epilog=epilog("bench-realtime"))(bench_realtime_cmd.bench_realtime)


def main() -> None:
    app()
