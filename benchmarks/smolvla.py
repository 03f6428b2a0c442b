"""BENCHMARKS.md's SmolVLA figures: export, parity and LeRobot eager vs ONNX Runtime per action chunk.

Builds LeRobot's default SmolVLA offline (``DEFAULT_SMOLVLA``: SmolVLM2-500M's architecture built
locally with random weights, its first 16 text layers, an action expert of half the width,
chunk 50, 10 flow steps, one 480x640 camera resized with padding to 512x512), exports it with
``policy-export onnx`` (timed, with the export's peak memory: the largest resident set of the
child process), checks parity with ``policy-export verify`` (batch 1 and 4, with and without
real-time chunking inputs, fp32 tolerance 1e-4), and times it with ``policy-export bench``
(LeRobot's preprocessor -> ``predict_action_chunk(batch, noise=...)`` -> postprocessor against
ONNX Runtime on the same inputs). Writes ``<out>/smolvla-summary.json`` beside the full reports.
Run through ``nox -s smolvla_default`` on an otherwise idle machine (about 10 GB of memory).

    python benchmarks/smolvla.py --out reports/smolvla                 # the figures
    python benchmarks/smolvla.py --out /tmp/s --tiny --iterations 2    # a quick check of the recipe
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from policy_export.demo_smolvla import DEFAULT_SMOLVLA, TINY_SMOLVLA, build_smolvla_checkpoint


def _run(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; its wall time (s) and its peak resident memory (MiB; children's maximum so far)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/smolvla"))
    ap.add_argument("--tiny", action="store_true", help="a toy SmolVLA instead of LeRobot's default (recipe check)")
    ap.add_argument("--batch-sizes", default="1", help="bench batch sizes")
    ap.add_argument("--verify-batch-sizes", default="1,4")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = TINY_SMOLVLA if args.tiny else DEFAULT_SMOLVLA
    checkpoint = out / "smolvla-checkpoint"
    t0 = time.perf_counter()
    if not (checkpoint / "config.json").exists():
        build_smolvla_checkpoint(checkpoint, recipe)
    build_s = time.perf_counter() - t0
    onnx = out / "smolvla.onnx"
    cli = [sys.executable, "-m", "policy_export"]
    export_s, export_mib = _run([*cli, "onnx", "--checkpoint", str(checkpoint), "--output", str(onnx), "--force"])
    parity = out / "parity.json"
    verify = [*cli, "verify", "--checkpoint", str(checkpoint), "--artifact", str(onnx), "--report", str(parity)]
    verify += ["--batch-sizes", args.verify_batch_sizes, "--samples", "2", "--force"]
    verify_s, _ = _run(verify)
    bench_json = out / "bench.json"
    bench = [*cli, "bench", "--checkpoint", str(checkpoint), "--artifact", str(onnx), "--json", str(bench_json)]
    bench += ["--batch-sizes", args.batch_sizes, "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    bench += ["--force"]
    if args.threads:
        bench += ["--threads", str(args.threads)]
    _run(bench)

    report = json.loads(bench_json.read_text())
    by = {(r["backend"], r["batch_size"]): r for r in report["results"]}
    rows = []
    for batch in sorted({r["batch_size"] for r in report["results"]}):
        eager, ort = by[("eager", batch)], by[(onnx.name, batch)]
        rows.append(
            {
                "batch_size": batch,
                "eager_chunk_ms": eager["median_ms"],
                "onnxruntime_chunk_ms": ort["median_ms"],
                "speedup": eager["median_ms"] / ort["median_ms"],
                "max_abs_vs_eager": ort["max_abs_vs_eager"],
                "background_cpu": max(eager["background_cpu"], ort["background_cpu"]),
            }
        )
    checks = json.loads(parity.read_text())
    parity_rows = [
        {"batch_size": r["batch_size"], "max_abs": r["stats"]["max_abs"], "status": c["status"]}
        for c in checks["checks"]
        for r in c["results"]
    ]
    summary = {
        "policy": "tiny" if args.tiny else "lerobot-default",
        "build_s": build_s,
        "export_s": export_s,
        "export_peak_rss_mib": export_mib,
        "onnx_mb": onnx.stat().st_size / 2**20,
        "verify_s": verify_s,
        "parity": parity_rows,
        "rows": rows,
        "bench_json": str(bench_json),
    }
    (out / "smolvla-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\nSmolVLA ({summary['policy']}): ONNX export {export_s:.1f} s, peak {export_mib:.0f} MiB, "
        f"{summary['onnx_mb']:.1f} MB; parity max abs "
        + ", ".join(f"b{p['batch_size']} {p['max_abs']:.1e}" for p in parity_rows)
    )
    print("| batch | eager ms/chunk | ORT ms/chunk | speed-up | max abs vs eager |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['eager_chunk_ms']:.1f} | {r['onnxruntime_chunk_ms']:.1f} | "
            f"{r['speedup']:.2f}x | {r['max_abs_vs_eager']:.1e} |"
        )
    print(f"wrote {out / 'smolvla-summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
