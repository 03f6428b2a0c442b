"""Where ONNX Runtime spends a call: its own profiler, summed per op type, top level vs a Loop body.

Why: "ORT is 1.34x eager on the default SmolVLA" says nothing about what is left to win. This
opens the artifact with the project's own session options (:func:`policy_export.runners.onnxrt.
session_options`: level ALL, sequential, the given intra-op threads), runs warm-up calls, then
profiles ``--calls`` calls and prints per op type: time, share of the call, node count, and how
much of it ran inside a ``Loop`` body (ORT names those nodes after the subgraph). Also prints the
share of the call spent in matrix products (MatMul, FusedMatMul, Gemm, Conv, their int8 forms),
so "what fraction is MatMul" and "are there copies/transposes in the loop" are one look. JSON too.

    python benchmarks/ort_profile.py --checkpoint CKPT --artifact core.onnx --json reports/profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: Op types that are matrix products (fp32 and the quantized forms ONNX Runtime fuses to).
PRODUCTS = {
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "Conv",
    "FusedConv",
    "NchwcConv",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulIntegerToFloat",
    "QGemm",
}


def summarize(events: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    """Per op type totals from ORT's profile events (``cat == "Node"``, ``*_kernel_time``)."""
    per_op: dict[str, dict[str, float]] = defaultdict(lambda: {"us": 0.0, "nodes": 0.0, "loop_us": 0.0})
    model_us = sum(e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes_seen: dict[str, set[str]] = defaultdict(set)
    # Body nodes are profiled in their own right, inside the span of their Loop's event.
    spans = [
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "Loop" and e["name"].endswith("_kernel_time")
    ]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        row = per_op[op]
        row["us"] += e["dur"]
        nodes_seen[op].add(node)
        # A Loop's own event covers its whole body, whose nodes are profiled too: the Loop row is the
        # body's total and is left out of the sums below (it would count the body twice).
        if op != "Loop" and any(a <= e["ts"] < b for a, b in spans):
            row["loop_us"] += e["dur"]
    for op, names in nodes_seen.items():
        per_op[op]["nodes"] = len(names)
    loop_total = per_op.get("Loop", {}).get("us", 0.0)
    kernels = sum(r["us"] for op, r in per_op.items() if op != "Loop")
    products = sum(r["us"] for op, r in per_op.items() if op in PRODUCTS)
    rows = sorted(({"op": op, **r} for op, r in per_op.items() if op != "Loop"), key=lambda r: r["us"], reverse=True)
    return {
        "calls": calls,
        "model_run_ms_per_call": model_us / calls / 1e3,
        "kernel_ms_per_call": kernels / calls / 1e3,
        "loop_ms_per_call": loop_total / calls / 1e3,
        "matrix_product_share_of_kernels": products / kernels if kernels else float("nan"),
        "rows": [
            {
                "op": r["op"],
                "ms_per_call": r["us"] / calls / 1e3,
                "share": r["us"] / kernels if kernels else float("nan"),
                "nodes": int(r["nodes"]),
                "in_loop_ms_per_call": r["loop_us"] / calls / 1e3,
            }
            for r in rows
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from policy_export.checkpoint import load_checkpoint
    from policy_export.inputs import checkpoint_inputs
    from policy_export.runners.onnxrt import session_options

    ckpt = load_checkpoint(args.checkpoint)
    feed = checkpoint_inputs(ckpt, 1, np.random.default_rng(0))
    so = session_options(args.threads)
    warm = ort.InferenceSession(str(args.artifact), so, providers=["CPUExecutionProvider"])
    for _ in range(args.warmup):
        warm.run(None, feed)
    del warm
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(args.threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(args.artifact), so, providers=["CPUExecutionProvider"])
        sess.run(None, feed)  # this session's first call (arena growth, prepacking) is not profiled below
        sess.end_profiling()
        so.enable_profiling = True
        sess = ort.InferenceSession(str(args.artifact), so, providers=["CPUExecutionProvider"])
        sess.run(None, feed)
        t0 = time.perf_counter()
        for _ in range(args.calls):
            sess.run(None, feed)
        wall_ms = (time.perf_counter() - t0) * 1e3 / args.calls
        events = json.loads(Path(sess.end_profiling()).read_text())
    # The first run in the profile is the warm-up call above: keep the last ``calls`` model runs only.
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    start = runs[-args.calls]["ts"]
    summary = summarize([e for e in events if e.get("ts", 0) >= start], args.calls)
    summary.update(
        {
            "artifact": str(args.artifact),
            "threads": args.threads,
            "wall_ms_per_call": wall_ms,
            "load_average": list(os.getloadavg()),
            "onnxruntime": ort.__version__,
        }
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.artifact.name}: {wall_ms:.0f} ms/call wall, kernels {summary['kernel_ms_per_call']:.0f} ms, "
        f"inside the Loop {summary['loop_ms_per_call']:.0f} ms; matrix products "
        f"{100 * summary['matrix_product_share_of_kernels']:.1f}% of kernel time (load {os.getloadavg()[0]:.1f})"
    )
    print("| op | ms/call | share | nodes | of it in the Loop ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in summary["rows"][: args.top]:
        print(
            f"| {r['op']} | {r['ms_per_call']:.1f} | {100 * r['share']:.1f}% | {r['nodes']} | "
            f"{r['in_loop_ms_per_call']:.1f} |"
        )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
