"""The fleet figures in BENCHMARKS.md: perf_analyzer and bench-fleet on the same servers.

Per policy (``small``: one 96x128 camera, the test suite's small ACT; ``demo``: the demo policy,
one 3x480x640 camera) it builds the checkpoint, exports ONNX, writes a Triton repository with
the default ``triton-repo`` options, then for dynamic batching on and off:

1. starts ``policy-export serve`` (a real subprocess) on free loopback ports;
2. runs Triton's ``perf_analyzer`` over gRPC, concurrency 1..max, inputs drawn from the
   checkpoint's statistics (``--input-data``), CSV kept as ``perf-batching-<on|off>.csv``;
3. runs ``bench-fleet --triton-url ... --sweep 1..max`` against the same server (our client, unpaced),
   JSON ``sweep-batching-<on|off>.json``;
4. stops the server with SIGTERM (as a supervisor would).

Then ``bench-fleet --repo ... --robots ...`` (paced robots, batching on and off, its own servers)
writes ``fleet.json`` / ``fleet.png``, and ``fleet-summary.md`` sets perf_analyzer's and our
throughput side by side. Run through ``nox -s fleet`` (which installs perf_analyzer); on a quiet
machine for figures worth keeping.

    python benchmarks/fleet.py --out reports/fleet --policies small,demo --duration 30
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from policy_export.demo import SMALL_RECIPE, CheckpointRecipe, build_checkpoint
from policy_export.fleet.perf import find_perf_analyzer, run_perf_analyzer, write_input_data
from policy_export.fleet.servers import variant_repo
from policy_export.triton.server import die_with_parent, free_ports

RECIPES: dict[str, CheckpointRecipe | None] = {"small": SMALL_RECIPE, "demo": None}
CLI = [sys.executable, "-m", "policy_export"]


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def prepare(policy: str, out: Path) -> tuple[Path, Path]:
    """Checkpoint -> ONNX -> repository (model 'act'), and perf_analyzer's input data."""
    from policy_export.checkpoint import load_checkpoint
    from policy_export.inputs import checkpoint_inputs

    ckpt = out / "checkpoint"
    if not (ckpt / "config.json").exists():
        build_checkpoint(ckpt, RECIPES[policy])
    onnx = out / "policy.onnx"
    run("onnx", "--checkpoint", str(ckpt), "--output", str(onnx), "--force")
    repo = out / "repo"
    run("triton-repo", "--artifact", str(onnx), "--repo", str(repo), "--model", "act", "--force")
    loaded = load_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    samples = [checkpoint_inputs(loaded, 1, rng) for _ in range(4)]
    data = out / "perf-input-data.json"
    write_input_data(data, samples)
    return repo, data


class Serve:
    """``policy-export serve`` as a subprocess, stopped with SIGTERM."""

    def __init__(self, repo: Path) -> None:
        self.ports = free_ports(3)
        http, grpc, metrics = (str(p) for p in self.ports)
        cmd = [*die_with_parent(), *CLI, "serve", "--repo", str(repo), "--http-port", http, "--grpc-port", grpc]
        cmd += ["--metrics-port", metrics]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.grpc_url = f"127.0.0.1:{grpc}"

    def __enter__(self) -> Serve:
        deadline = time.monotonic() + 300
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"  serve: {line.rstrip()}", flush=True)
            if line.startswith("ready"):
                return self
            if time.monotonic() > deadline:
                break
        self.__exit__()
        raise SystemExit(f"serve did not become ready (exit {self.proc.poll()})")

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def summary(out: Path, policies: list[str]) -> str:
    lines = ["# Fleet benchmark summary", ""]
    for policy in policies:
        pdir = out / policy
        lines += [f"## {policy}", "", "| batching | concurrency | perf_analyzer infer/s | ours infer/s | ours / PA | PA p99 ms | ours p99 ms | ours avg batch |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for batching in ("on", "off"):
            pa_csv = pdir / f"perf-batching-{batching}.csv"
            ours_json = pdir / f"sweep-batching-{batching}.json"
            if not pa_csv.exists() or not ours_json.exists():
                continue
            from policy_export.fleet.perf import read_csv

            pa = {int(r["Concurrency"]): r for r in read_csv(pa_csv)}
            ours = {r["robots"]: r for r in json.loads(ours_json.read_text())["rows"]}
            for n in sorted(set(pa) | set(ours)):
                p, o = pa.get(n), ours.get(n)
                pa_rate = p["Inferences/Second"] if p else float("nan")
                our_rate = o["throughput_infer_per_s"] if o else float("nan")
                pa_p99 = p.get("p99 latency", float("nan")) / 1e3 if p else float("nan")
                lines.append(
                    f"| {batching} | {n} | {pa_rate:.1f} | {our_rate:.1f} | {our_rate / pa_rate:.2f} | {pa_p99:.1f} | "
                    f"{o['chunk_p99_ms'] if o else float('nan'):.1f} | {o['avg_batch_size'] if o else float('nan'):.2f} |"
                )
        fleet = pdir / "fleet.json"
        if fleet.exists():
            from policy_export.fleet.report import summary_lines

            lines += ["", *[f"- {s}" for s in summary_lines(json.loads(fleet.read_text()))]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/fleet"))
    parser.add_argument("--policies", default="small,demo", help="comma-separated: small, demo")
    parser.add_argument("--robots", default="1,2,4,8", help="paced robot counts (bench-fleet --robots)")
    parser.add_argument("--max-concurrency", type=int, default=8, help="perf_analyzer and --sweep go 1..this")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per bench-fleet row")
    parser.add_argument("--measurement-interval-ms", type=int, default=5000, help="perf_analyzer window")
    parser.add_argument(
        "--stability-percent", type=float, default=10.0, help="perf_analyzer -s; loosen only for a quick recipe check"
    )
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(RECIPES))
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {sorted(RECIPES)}")
    binary, env = find_perf_analyzer()
    sweep = ",".join(str(n) for n in range(1, args.max_concurrency + 1))
    for policy in policies:
        pdir = args.out / policy
        pdir.mkdir(parents=True, exist_ok=True)
        repo, data = prepare(policy, pdir)
        with tempfile.TemporaryDirectory(prefix="policy-export-fleet-bench-") as tmp:
            for batching in (True, False):
                label = "on" if batching else "off"
                variant = variant_repo(repo, "act", batching, Path(tmp))
                with Serve(variant) as served:
                    print(f"perf_analyzer: {policy}, batching {label}", flush=True)
                    rows = run_perf_analyzer(
                        binary,
                        env,
                        served.grpc_url,
                        "act",
                        (1, args.max_concurrency),
                        data,
                        pdir / f"perf-batching-{label}.csv",
                        args.measurement_interval_ms,
                        args.stability_percent,
                    )
                    for r in rows:
                        print(f"  concurrency {r['Concurrency']:.0f}: {r['Inferences/Second']:.1f} infer/s", flush=True)
                    run(
                        "bench-fleet", "--triton-url", served.grpc_url, "--model", "act", "--sweep", sweep,
                        "--duration", str(args.duration), "--json", str(pdir / f"sweep-batching-{label}.json"),
                    )  # fmt: skip
        run(
            "bench-fleet", "--repo", str(repo), "--model", "act", "--robots", args.robots, "--fps", str(args.fps),
            "--duration", str(args.duration), "--json", str(pdir / "fleet.json"), "--plot", str(pdir / "fleet.png"),
        )  # fmt: skip
    text = summary(args.out, policies)
    (args.out / "fleet-summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
