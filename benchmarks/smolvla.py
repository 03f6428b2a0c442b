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

``--lowp bf16`` (``nox -s smolvla_speed``) also makes the reduced-precision artifacts with
``policy-export quantize`` (``bf16``: OpenVINO's bf16 hint; ``int8``: ONNX Runtime QDQ; ``int8-ov``:
OpenVINO/NNCF), judges them with ``verify`` per action dimension as a fraction of the action std
(``--tolerance-std``, issue 22's gate), and times eager, fp32 ONNX Runtime and each of them in
the same ``bench`` run (interleaved rounds, each backend in its own process).

    python benchmarks/smolvla.py --out reports/smolvla                 # the figures
    python benchmarks/smolvla.py --out reports/smolvla --lowp bf16 --reuse   # + bf16, the export kept
    python benchmarks/smolvla.py --out /tmp/s --tiny --iterations 2    # a quick check of the recipe
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from policy_export.demo_smolvla import DEFAULT_SMOLVLA, TINY_SMOLVLA, build_smolvla_checkpoint

#: --lowp keys: (name, quantize --precision, --runtime, file suffix).
_LOWP = {
    "bf16": ("bf16", "bf16", "openvino", ".xml"),
    "int8": ("int8", "int8", "onnxruntime", ".onnx"),
    "int8-ov": ("int8-ov", "int8", "openvino", ".xml"),
}


def _run(cmd: list[str], check: bool = True) -> tuple[float, float]:
    """Run ``cmd``; its wall time (s) and its peak resident memory (MiB; children's maximum so far)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=check)
    wall = time.perf_counter() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _cpu_line() -> str:
    from policy_export.cpu import cpu_info

    info = cpu_info()
    avx512 = "avx512f" in info.flags
    return f"{info.model}: AVX-512 {avx512}, VNNI {info.vnni}, BF16 {info.bf16}, AMX {info.amx}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/smolvla"))
    ap.add_argument("--tiny", action="store_true", help="a toy SmolVLA instead of LeRobot's default (recipe check)")
    ap.add_argument("--batch-sizes", default="1", help="bench batch sizes")
    ap.add_argument("--verify-batch-sizes", default="1,4")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lowp", default="", help="comma-separated: bf16, int8 (ONNX Runtime), int8-ov (OpenVINO)")
    ap.add_argument("--reuse", action="store_true", help="keep an existing export / quantized files (not re-timed)")
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
    export_s = export_mib = float("nan")
    if not (args.reuse and onnx.exists()):
        export_s, export_mib = _run([*cli, "onnx", "--checkpoint", str(checkpoint), "--output", str(onnx), "--force"])
    lowp = [_LOWP[k] for k in args.lowp.split(",") if k]
    quantized: list[tuple[str, Path]] = []
    for key, precision, runtime, suffix in lowp:
        path = out / f"smolvla-{key}{suffix}"
        if not (args.reuse and path.exists()):
            q = [*cli, "quantize", "--checkpoint", str(checkpoint), "--artifact", str(onnx), "--output", str(path)]
            q += ["--precision", precision, "--runtime", runtime, "--calibration-samples", "4", "--force"]
            subprocess.run(q, check=False)  # exit 1: written but over its tolerance; verify below is the gate
        if path.exists():
            quantized.append((key, path))
    artifacts = [onnx, *(p for _, p in quantized)]
    parity = out / "parity.json"
    verify = [*cli, "verify", "--checkpoint", str(checkpoint), "--report", str(parity)]
    verify += [a for path in artifacts for a in ("--artifact", str(path))]
    verify += ["--batch-sizes", args.verify_batch_sizes, "--samples", "2", "--force"]
    verify_s, _ = _run(verify, check=False)  # a low-precision artifact over its gate exits 1: still reported
    bench_json = out / "bench.json"
    bench = [*cli, "bench", "--checkpoint", str(checkpoint), "--json", str(bench_json)]
    bench += [a for path in artifacts for a in ("--artifact", str(path))]
    bench += ["--batch-sizes", args.batch_sizes, "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    bench += ["--force"]
    if args.threads:
        bench += ["--threads", str(args.threads)]
    _run(bench)

    report = json.loads(bench_json.read_text())
    by = {(r["backend"], r["batch_size"]): r for r in report["results"]}
    checks = json.loads(parity.read_text())
    worst: dict[tuple[str, int], dict[str, object]] = {}
    for c in checks["checks"]:
        for r in c["results"]:
            dims = r.get("dims") or []
            worst[(Path(c["artifact"]).name, r["batch_size"])] = {
                "max_abs": r["stats"]["max_abs"],
                "status": c["status"],
                "per_dim_frac_std": [d["max_frac_std"] for d in dims],
                "tolerance_std": r.get("tolerance_std"),
            }
    rows = []
    for batch in sorted({r["batch_size"] for r in report["results"]}):
        eager, ort = by[("eager", batch)], by[(onnx.name, batch)]
        for name, path in [("onnxruntime fp32", onnx), *((f"{k} ({_LOWP[k][2]})", p) for k, p in quantized)]:
            got = by.get((path.name, batch))
            if got is None:
                continue
            rows.append(
                {
                    "backend": name,
                    "artifact": path.name,
                    "batch_size": batch,
                    "eager_chunk_ms": eager["median_ms"],
                    "chunk_ms": got["median_ms"],
                    "onnxruntime_chunk_ms": ort["median_ms"],
                    "speedup": eager["median_ms"] / got["median_ms"],
                    "vs_fp32_onnxruntime": ort["median_ms"] / got["median_ms"],
                    "max_abs_vs_eager": got["max_abs_vs_eager"],
                    "verify": worst.get((path.name, batch)) or worst.get((path.name, 1)),
                    "background_cpu": max(eager["background_cpu"], got["background_cpu"]),
                }
            )
    parity_rows = [
        {
            "artifact": Path(c["artifact"]).name,
            "batch_size": r["batch_size"],
            "max_abs": r["stats"]["max_abs"],
            "status": c["status"],
        }
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
        "load_average": list(os.getloadavg()),
        "cpu": _cpu_line(),
        "bench_json": str(bench_json),
    }
    (out / "smolvla-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\nSmolVLA ({summary['policy']}): ONNX export {export_s:.1f} s, peak {export_mib:.0f} MiB, "
        f"{summary['onnx_mb']:.1f} MB; parity max abs "
        + ", ".join(f"b{p['batch_size']} {p['max_abs']:.1e}" for p in parity_rows)
    )
    print(f"load average {os.getloadavg()}, CPU: {_cpu_line()}")
    print("| batch | backend | ms/chunk | x eager | x fp32 ORT | verify: worst action dim / std (per dim) |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        v = r["verify"] or {}
        dims = ", ".join(f"{f:.4f}" for f in v.get("per_dim_frac_std", []))
        gate = (
            f" (gate {v['tolerance_std']:g}, {v['status']})" if v.get("tolerance_std") else f" ({v.get('status', '-')})"
        )
        print(
            f"| {r['batch_size']} | {r['backend']} | {r['chunk_ms']:.1f} | {r['speedup']:.2f}x | "
            f"{r['vs_fp32_onnxruntime']:.2f}x | {dims or '-'}{gate} |"
        )
    print(f"eager {rows[0]['eager_chunk_ms']:.1f} ms/chunk" if rows else "no rows")
    print(f"wrote {out / 'smolvla-summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
