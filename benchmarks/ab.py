"""Interleaved A/B of inference variants: the tool behind BENCHMARKS.md's "What we tried".

Each variant (an ONNX Runtime session configuration, LeRobot eager, or the torch core) runs in
its own spawned process with the same thread count. Rounds call every variant once, one at a
time, in rotating order; a round is kept only if other processes used less than
``--max-background`` of the CPUs during it (``--stress`` instead starts one busy process and
keeps every round, to see behaviour on shared cores). Prints each variant's median and the
median of its per-round ratio to the first variant.

    python benchmarks/ab.py benchmarks/ab-session-options.json --batch 1 --rounds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from typing import Any

import numpy as np

from policy_export.bench.machine import Quiet, machine_cpu_seconds
from policy_export.bench.worker import thread_env


def machine_busy_s() -> float:
    return machine_cpu_seconds()[0]


def spin() -> None:
    while True:
        pass


def make_runner(variant: dict[str, Any], feed: dict[str, np.ndarray], threads: int) -> Any:
    kind = variant.get("kind", "ort")
    if kind in ("eager", "torchcore"):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        from policy_export.checkpoint import load_checkpoint

        ckpt = load_checkpoint(variant["checkpoint"])
        if kind == "eager":
            from policy_export.families import eager_chunk

            return lambda: eager_chunk(ckpt, feed)
        from policy_export.core import build_core

        core = build_core(ckpt)
        args = [torch.from_numpy(feed[n]) for n in ckpt.spec.input_names]

        def run_core() -> np.ndarray:
            with torch.inference_mode():
                return core(*args).numpy()

        return run_core
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, variant.get("level", "ORT_ENABLE_ALL"))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = variant.get("arena", True)
    so.enable_mem_pattern = variant.get("pattern", True)
    for key, value in variant.get("config", {}).items():
        so.add_session_config_entry(key, value)
    so.log_severity_level = 3
    sess = ort.InferenceSession(variant["model"], so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feed)[0]


def worker(conn: Any, variant: dict[str, Any], batch: int, threads: int) -> None:
    rng = np.random.default_rng(0)
    feed = {
        "state": rng.standard_normal((batch, variant.get("state_dim", 8))).astype(np.float32),
        "image": rng.random((batch, *variant.get("image_shape", (3, 480, 640))), dtype=np.float32),
    }
    run = make_runner(variant, feed, threads)
    conn.send(np.asarray(run(), dtype=np.float32))
    while conn.recv() is not None:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        conn.send((wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, r1.ru_stime - r0.ru_stime))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", help="JSON list of variants")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--max-background", type=float, default=0.08)
    parser.add_argument("--stress", action="store_true", help="one busy process on the side; keep every round")
    args = parser.parse_args()
    with open(args.variants) as fh:
        variants = json.load(fh)
    os.environ.update(thread_env(args.threads))  # inherited by the spawned workers before they import torch/ORT
    ctx = mp.get_context("spawn")
    stress = ctx.Process(target=spin, daemon=True) if args.stress else None
    # The same quiet-machine test as `policy-export bench` (30 s at most per round, no overall cap).
    gate = Quiet(args.max_background, max_wait_s=30.0, budget_s=float("inf"))
    workers, outputs = [], []
    for v in variants:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, v, args.batch, args.threads))
        proc.start()
        outputs.append(parent.recv())
        workers.append((parent, proc))
    if stress:
        stress.start()
    cpus = os.cpu_count() or 1
    times: list[list[float]] = [[] for _ in variants]
    sys_s: list[list[float]] = [[] for _ in variants]
    kept = tried = 0
    while kept < args.rounds and tried < 4 * args.rounds + 1:
        tried += 1
        if not stress:
            gate.wait()
        order = list(range(len(variants)))
        order = order[tried % len(order) :] + order[: tried % len(order)]
        results, quiet = {}, True
        for i in order:
            time.sleep(0.03)
            b0, t0 = machine_busy_s(), time.perf_counter()
            workers[i][0].send(1)
            wall, cpu, st = workers[i][0].recv()
            others = (machine_busy_s() - b0 - cpu) / ((time.perf_counter() - t0) * cpus)
            quiet = quiet and (stress is not None or others <= args.max_background)
            results[i] = (wall, st)
        if tried == 1 or not quiet:
            continue  # the first round warms up
        kept += 1
        for i, (wall, st) in results.items():
            times[i].append(wall)
            sys_s[i].append(st)
    for parent, proc in workers:
        parent.send(None)
        proc.join()
    if stress:
        stress.terminate()
    print(f"batch {args.batch}, {args.threads} threads: kept {kept} rounds of {tried}{' (stress)' if stress else ''}")
    base = np.array(times[0])
    for v, t, s, out in zip(variants, times, sys_s, outputs, strict=True):
        t = np.array(t)
        print(
            f"{v['name']:28s} median {np.median(t) * 1e3:7.1f} ms  p90 {np.percentile(t, 90) * 1e3:7.1f}  "
            f"ratio vs first {np.median(t / base):.3f}  sys {np.median(s) * 1e3:4.0f} ms  "
            f"max |diff| vs first {np.abs(out - outputs[0]).max():.1e}"
        )


if __name__ == "__main__":
    main()
