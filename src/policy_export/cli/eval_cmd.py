"""``policy-export eval``: closed-loop episodes in LeRobot's simulators, eager vs each artifact."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import CheckpointOpt, console, exit_with, handle_errors, load


class ClientKind(StrEnum):
    LOCAL = "local"
    TRITON = "triton"
    REALTIME = "realtime"


def _latencies(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--latency-steps takes comma-separated integers, e.g. 0,1,3,10; got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise typer.BadParameter(f"--latency-steps takes integers >= 0, e.g. 0,1,3,10; got {text!r}")
    return values


@handle_errors
def eval_(
    checkpoint: CheckpointOpt,
    artifact: Annotated[
        list[Path], typer.Option("--artifact", "-a", help="Exported file (ONNX, TorchScript); repeatable.")
    ],
    env: Annotated[str, typer.Option(help="LeRobot simulator: pusht, aloha, libero, metaworld or so101.")],
    episodes: Annotated[int, typer.Option(help="Episodes (seeds --seed, --seed+1, ...); at most 500.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the first episode (and of the diffusion noise).")] = 0,
    steps: Annotated[
        int, typer.Option(help="Longest episode in control steps (the env's truncation); at most 1000.")
    ] = 300,
    task: Annotated[
        str | None, typer.Option(help="The env's task (e.g. AlohaTransferCube-v0); default LeRobot's.")
    ] = None,
    client: Annotated[
        ClientKind,
        typer.Option(
            help="local: the synchronous PolicyClient; triton: the same client against --triton-url; "
            "realtime: RealtimeClient in simulated time."
        ),
    ] = ClientKind.LOCAL,
    triton_url: Annotated[
        str | None, typer.Option(help="triton: the server (host:port, gRPC) serving each --artifact.")
    ] = None,
    triton_model: Annotated[
        list[str] | None,
        typer.Option(help="triton: the model name serving each --artifact, in the same order; repeatable."),
    ] = None,
    latency_steps: Annotated[
        str | None,
        typer.Option(
            help="realtime: inference latency in control steps of sim time, comma-separated (default 0,1,3,10)."
        ),
    ] = None,
    merge: Annotated[
        str | None,
        typer.Option(
            help="realtime: how a new chunk joins the buffer (replace, ensemble, rtc: real-time chunking, for a model "
            "with RTC inputs); default the client's (ensemble for a model that ensembles, else replace)."
        ),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="Action tolerance in the policy's normalized action space (as verify's default).")
    ] = 1e-4,
    chaos: Annotated[
        bool,
        typer.Option(help="Also run eager with observations moved one float32 ulp: the baseline divergence."),
    ] = True,
    report: Annotated[Path | None, typer.Option(help="Write the full report as JSON here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="realtime: success and return vs latency as a PNG (matplotlib).")
    ] = None,
    video: Annotated[
        Path | None, typer.Option(help="Folder for side-by-side GIFs (eager left, artifact right), one per episode.")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="CPU threads for torch and ONNX Runtime (1: fastest on a shared host).")
    ] = 1,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a --report/--plot file that is not ours.")] = False,
) -> None:
    """Run LeRobot's eager policy and each artifact (through the robot runtime) in a simulator, same seeds.

    Exit 0: every fp32 artifact stays within --tolerance of eager at least as long as eager perturbed by one
    float32 ulp does, with the same outcomes; reduced-precision artifacts within their band. Exit 1 otherwise;
    2: bad input (unknown env, env package missing, features that do not fit the checkpoint, caps).
    """
    from policy_export.fsutil import check_report_writable
    from policy_export.sim.envs import env_entry
    from policy_export.sim.evaluate import DEFAULT_LATENCIES, EvalSettings, evaluate
    from policy_export.sim.report import render_latency, render_table, render_verdicts, write_json, write_latency_plot

    env_entry(env)  # unknown env or missing package: one line before loading anything
    lat = _latencies(latency_steps)
    if client is ClientKind.REALTIME and lat is None:
        lat = list(DEFAULT_LATENCIES)
    if client is not ClientKind.REALTIME and lat is not None:
        raise typer.BadParameter("--latency-steps needs --client realtime")
    if (client is ClientKind.TRITON) != (triton_url is not None):
        raise typer.BadParameter("--client triton and --triton-url go together (host:port of the server)")
    if triton_model and client is not ClientKind.TRITON:
        raise typer.BadParameter("--triton-model needs --client triton")
    if merge is not None and client is not ClientKind.REALTIME:
        raise typer.BadParameter("--merge needs --client realtime")
    inputs = [checkpoint, *artifact]
    for out, what in ((report, "JSON report"), (plot, "plot")):
        if out is not None:
            check_report_writable(out, force, what, inputs)
    ckpt = load(checkpoint)
    settings = EvalSettings(
        env=env,
        episodes=episodes,
        seed=seed,
        steps=steps,
        task=task,
        tolerance=tolerance,
        latency_steps=lat,
        merge=merge,
        chaos=chaos,
        video_dir=video,
        threads=threads,
        triton_url=triton_url,
        triton_models=list(triton_model or []),
    )
    with console.status("evaluating") as status:
        result = evaluate(ckpt, list(artifact), settings, progress=lambda msg: status.update(msg))
    console.print(render_table(result))
    latency = render_latency(result)
    if latency is not None:
        console.print(latency)
    console.print(render_verdicts(result))
    if report:
        write_json(result, report, inputs, force)
    if plot:
        write_latency_plot(result, plot, inputs, force)
    colour = "green" if result.exit_code == 0 else "red"
    console.print(f"[bold {colour}]eval {'passed' if result.exit_code == 0 else 'failed'}[/] (exit {result.exit_code})")
    exit_with(result.exit_code)
