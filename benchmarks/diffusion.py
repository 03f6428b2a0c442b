"""BENCHMARKS.md's Diffusion Policy figures: LeRobot eager vs ONNX Runtime per action chunk.

Builds a Diffusion Policy checkpoint at LeRobot's default configuration (``DiffusionRecipe()``:
down_dims 512/1024/2048, DDPM with 100 denoising steps, one 96x96 camera cropped to 84x84,
n_obs_steps 2, horizon 16, n_action_steps 8), exports it with ``policy-export onnx`` (timed:
export time and file size), then runs ``policy-export bench`` on it at batch 1 and 8. The eager
side is LeRobot's preprocessor -> ``predict_action_chunk(batch, noise=...)`` -> postprocessor,
which is what ``select_action`` runs whenever its action queue is empty; both sides get the same
inputs and noise. Per batch size it reports per-chunk latency, ms per denoising step, the
speed-up and the largest difference from eager, and writes ``<out>/diffusion-summary.json``
next to the full bench JSON. Run through ``nox -s bench_diffusion`` on an otherwise idle machine.

    python benchmarks/diffusion.py --out reports/diffusion                  # the figures
    python benchmarks/diffusion.py --out /tmp/d --tiny --iterations 2       # a quick check of the recipe
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from policy_export.demo import DiffusionRecipe, build_diffusion_checkpoint

#: A few-second stand-in with the same structure, to check the recipe end to end.
TINY = DiffusionRecipe(
    cameras={"top": (3, 40, 40)},
    crop_shape=(36, 36),
    horizon=8,
    n_action_steps=4,
    config_overrides={"down_dims": (16, 32), "diffusion_step_embed_dim": 16, "num_inference_steps": 5},
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/diffusion"))
    ap.add_argument("--tiny", action="store_true", help="a tiny policy instead of LeRobot's default (recipe check)")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = TINY if args.tiny else DiffusionRecipe()
    checkpoint = out / "diffusion-checkpoint"
    if not (checkpoint / "config.json").exists():
        build_diffusion_checkpoint(checkpoint, recipe)
    onnx = out / "diffusion.onnx"
    cli = [sys.executable, "-m", "policy_export"]
    t0 = time.perf_counter()
    subprocess.run([*cli, "onnx", "--checkpoint", str(checkpoint), "--output", str(onnx), "--force"], check=True)
    export_s = time.perf_counter() - t0
    bench_json = out / "bench.json"
    bench = [*cli, "bench", "--checkpoint", str(checkpoint), "--artifact", str(onnx), "--json", str(bench_json)]
    bench += ["--batch-sizes", args.batch_sizes, "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    if args.threads:
        bench += ["--threads", str(args.threads)]
    subprocess.run(bench, check=True)

    report = json.loads(bench_json.read_text())
    steps = int(report["policy"]["family"]["num_inference_steps"])
    by = {(r["backend"], r["batch_size"]): r for r in report["results"]}
    rows = []
    for batch in sorted({r["batch_size"] for r in report["results"]}):
        eager, ort = by[("eager", batch)], by[(onnx.name, batch)]
        rows.append(
            {
                "batch_size": batch,
                "eager_chunk_ms": eager["median_ms"],
                "onnxruntime_chunk_ms": ort["median_ms"],
                "eager_ms_per_step": eager["median_ms"] / steps,
                "onnxruntime_ms_per_step": ort["median_ms"] / steps,
                "speedup": eager["median_ms"] / ort["median_ms"],
                "max_abs_vs_eager": ort["max_abs_vs_eager"],
                "background_cpu": max(eager["background_cpu"], ort["background_cpu"]),
            }
        )
    summary = {
        "policy": "tiny" if args.tiny else "lerobot-default",
        "denoising_steps": steps,
        "scheduler": report["policy"]["family"]["noise_scheduler_type"],
        "export_s": export_s,
        "onnx_mb": onnx.stat().st_size / 2**20,
        "rows": rows,
        "bench_json": str(bench_json),
    }
    (out / "diffusion-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\nDiffusion Policy ({summary['policy']}, {summary['scheduler']} {steps} steps): "
        f"ONNX export {export_s:.1f} s, {summary['onnx_mb']:.1f} MB"
    )
    print("| batch | eager ms/chunk | ORT ms/chunk | eager ms/step | ORT ms/step | speed-up | max abs vs eager |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['eager_chunk_ms']:.1f} | {r['onnxruntime_chunk_ms']:.1f} | "
            f"{r['eager_ms_per_step']:.2f} | {r['onnxruntime_ms_per_step']:.2f} | {r['speedup']:.2f}x | "
            f"{r['max_abs_vs_eager']:.1e} |"
        )
    print(f"wrote {out / 'diffusion-summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
