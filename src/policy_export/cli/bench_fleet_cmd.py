"""``policy-export bench-fleet``: how many robots at ``fps`` one Triton server holds."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import console, err_console, handle_errors
from policy_export.cli.serve_cmd import VenvOpt


class Client(StrEnum):
    realtime = "realtime"
    sync = "sync"


class Batching(StrEnum):
    both = "both"
    on = "on"
    off = "off"


def parse_counts(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated positive integers, as one line naming the option otherwise."""
    from policy_export.errors import BadInputError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise BadInputError(f"{option} {text!r}: give positive integers separated by commas, e.g. 1,2,4,8")
    return tuple(sorted(set(values)))


@handle_errors
def bench_fleet(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name in the repository.", show_default=False)],
    repo: Annotated[
        Path | None, typer.Option("--repo", help="Model repository; a server is started on 127.0.0.1 for the run.")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--triton-url",
            help="Use running servers instead: gRPC host:port, comma-separated replicas; robots are spread over them.",
        ),
    ] = None,
    replica_scaling: Annotated[
        bool,
        typer.Option(
            "--replica-scaling",
            help="With several --triton-url replicas: run every count against the first replica alone, then against all, "
            "and print the capacity ratio and what limits the larger fleet.",
        ),
    ] = False,
    robots: Annotated[str, typer.Option(help="Comma-separated robot counts to run.")] = "1,2,4,8",
    fps: Annotated[float, typer.Option(help="Control rate of every robot (Hz).")] = 30.0,
    duration: Annotated[float, typer.Option(help="Seconds per robot count.")] = 30.0,
    sweep: Annotated[
        str | None,
        typer.Option(help="Instead of paced robots: unpaced clients at these concurrencies (throughput curve)."),
    ] = None,
    batching: Annotated[
        Batching, typer.Option(help="Dynamic batching on, off or both (with --repo; --triton-url runs what is served).")
    ] = Batching.both,
    client: Annotated[
        Client,
        typer.Option(
            help="realtime: each robot drives a RealtimeClient (chunks fetched ahead); sync: PolicyClient, blocking at chunk boundaries."
        ),
    ] = Client.realtime,
    timeout: Annotated[float, typer.Option(help="Client deadline per call, seconds.")] = 5.0,
    task: Annotated[
        str | None, typer.Option(help="A language model's instruction (SmolVLA), the same for every robot.")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="A language model's tokenizer (<artifact>.tokenizer.json); with --repo it is found in the repository."
        ),
    ] = None,
    venv: VenvOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every row and the summary here.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG: robots vs chunk p99 and fallback ticks (sweep: throughput).")
    ] = None,
) -> None:
    """Run N simulated robots (one process and one client each) at FPS against Triton and report missed and fallback ticks, chunk latency and the server's own queue, compute and batch figures per N.

    The capacity is the largest N with no fallback tick, printed beside LeRobot's rule of thumb N ~ 0.8 / (request rate x inference time) from the measured figures, with what limits it. With --repo the run is repeated with dynamic batching on and off. Load goes only to 127.0.0.1 servers this command starts, or to --triton-url.
    """
    from policy_export.errors import BadInputError
    from policy_export.fleet.bench import FleetConfig, run_fleet
    from policy_export.fleet.report import render_table, summary_lines
    from policy_export.fsutil import check_writable, write_text_atomic
    from policy_export.runtime.triton import split_url

    counts = parse_counts(robots, "--robots")
    sweep_counts = parse_counts(sweep, "--sweep") if sweep is not None else ()
    urls = tuple(split_url(u, "grpc")[0] for u in url.split(",") if u.strip()) if url else ()
    if url is not None and not urls:
        raise BadInputError("--triton-url: give gRPC host:port addresses separated by commas")
    if repo is not None and urls:
        raise BadInputError("give --repo (start a server) or --triton-url (use running ones), not both")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BadInputError("--plot needs matplotlib: pip install 'policy-export[bench]'") from None
    inputs = [p for p in (repo, tokenizer) if p is not None]  # an input is never overwritten
    for path in (json_path, plot):
        if path is not None:
            check_writable(path, force=True, inputs=inputs)
    modes = {Batching.both: (True, False), Batching.on: (True,), Batching.off: (False,)}[batching]
    cfg = FleetConfig(
        model=model,
        robots=counts,
        fps=fps,
        duration_s=duration,
        repo=repo,
        urls=urls,
        batching=modes,
        sweep=sweep_counts,
        timeout_s=timeout,
        venv=venv,
        realtime=client is Client.realtime,
        task=task,
        tokenizer=tokenizer,
        replica_scaling=replica_scaling,
    )
    report = run_fleet(cfg, progress=lambda m: err_console.print(f"[dim]{m}[/]"))
    console.print(render_table(report))
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)
    if json_path:
        write_text_atomic(json_path, json.dumps(report, indent=2, default=str) + "\n", inputs=inputs)
        console.print(f"wrote {json_path}")
    if plot:
        from policy_export.fleet.report import plot as draw

        draw(report, plot)
        console.print(f"wrote {plot}")
