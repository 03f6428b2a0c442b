"""BENCHMARKS.md's pi0.5 figures at real size: export memory, parity, LeRobot eager vs ONNX Runtime per chunk.

Builds (once) the ``gemma_300m`` + ``gemma_300m`` pi0.5 at its real size offline (SigLIP So400m,
257k-token vocabulary, chunk 50, 10 flow steps, one 224x224 camera, 200 prompt tokens; random
weights; ``GEMMA_300M_PI05``), loads it as every command does, and in one process:

1. times LeRobot's preprocessor -> ``predict_action_chunk(batch, noise=...)`` -> postprocessor at
   batch 1 (``--iterations`` runs after one warm-up) and keeps its outputs, without and with RTC;
2. exports the core as ``policy-export onnx`` does (``export_onnx``: the flow steps as one ONNX
   ``Loop``, weights as ONNX external data past protobuf's 2 GB), recording the export's time and the
   process's peak resident memory;
3. frees the torch model, opens the ONNX file in ONNX Runtime, times it on the same inputs and
   compares with LeRobot's outputs (fp32, 1e-4 in the normalized action space).

A watchdog ends the process (exit 3) if its resident memory passes ``--max-rss-gb`` (default 20).
Run under ``flock /tmp/bigmem.lock`` on a machine with ~22 GB free (``nox -s pi05_300m``).
Writes ``<out>/pi05-summary.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _watchdog(limit_gb: float) -> None:
    def watch() -> None:
        while True:
            if _rss_gb() > limit_gb:
                print(f"\nwatchdog: resident memory {_rss_gb():.1f} GB > {limit_gb} GB; stopping", flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def _timed(fn: Any, iterations: int) -> tuple[list[float], Any]:
    fn()
    times, out = [], None
    for _ in range(iterations):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/pi05"))
    ap.add_argument("--tiny", action="store_true", help="the test-size pi0.5 (a quick check of this script)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--max-rss-gb", type=float, default=20.0)
    ap.add_argument("--build-only", action="store_true", help="build the checkpoint and stop")
    args = ap.parse_args(argv)
    _watchdog(args.max_rss_gb)
    import torch

    from policy_export.checkpoint import load_checkpoint
    from policy_export.demo_pi import GEMMA_300M_PI05, TINY_PI05, build_pi_checkpoint
    from policy_export.export.onnx import export_onnx
    from policy_export.families import family_for
    from policy_export.inputs import random_inputs

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = TINY_PI05 if args.tiny else GEMMA_300M_PI05
    root = out / "pi05-checkpoint"
    summary: dict[str, Any] = {
        "policy": "tiny" if args.tiny else "gemma_300m+gemma_300m",
        "threads": torch.get_num_threads(),
    }
    t0 = time.perf_counter()
    if args.build_only:
        build_pi_checkpoint(root, recipe)
        print(f"built {root} in {time.perf_counter() - t0:.0f} s; peak rss {_peak_gb():.1f} GB", flush=True)
        return 0
    if not (root / "config.json").exists():
        # In its own process: the build's peak would otherwise hide the export's in this one's max RSS.
        import subprocess

        cmd = [sys.executable, __file__, "--build-only", "--out", str(out), *(["--tiny"] if args.tiny else [])]
        subprocess.run(cmd, check=True)
        summary["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckpt = load_checkpoint(root)
    summary["load_s"], summary["rss_after_load_gb"] = time.perf_counter() - t0, _rss_gb()
    model = ckpt.policy.model
    pwe = model.paligemma_with_expert
    summary["parameters"] = sum(p.numel() for p in ckpt.policy.parameters())
    # Neither LeRobot's sampling nor the core reads the two language-model heads (257k x width each).
    pwe.paligemma.lm_head = torch.nn.Identity()
    pwe.gemma_expert.lm_head = torch.nn.Identity()
    gc.collect()
    summary["parameters_used"] = sum(p.numel() for p in ckpt.policy.parameters())
    spec = ckpt.spec
    family = family_for(spec.policy_type)
    rng = np.random.default_rng(0)
    feed = random_inputs(spec, 1, rng)
    feed["lang_mask"][:, 48:] = False  # a prompt of 48 tokens, the rest padding (as the host pads)
    rtc_feed = dict(feed)
    rtc_feed["rtc_prev_chunk"] = rng.normal(0, 1, feed["rtc_prev_chunk"].shape).astype(np.float32)
    rtc_feed["rtc_prev_len"] = np.array([20])
    rtc_feed["rtc_delay"] = np.array([3])

    reference = family.reference_chunk
    eager_ms, want = _timed(lambda: reference(ckpt, feed, "float32"), args.iterations)  # noqa: F821 (deleted below, after use)
    want_rtc = reference(ckpt, rtc_feed, "float32")
    summary["eager_ms"] = eager_ms
    summary["rss_after_eager_gb"], summary["peak_rss_eager_gb"] = _rss_gb(), _peak_gb()
    (out / "pi05-summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # kept if the export is stopped
    print(
        f"LeRobot eager per chunk (batch 1): {statistics.median(eager_ms):.0f} ms; rss {_rss_gb():.1f} GB", flush=True
    )

    names = spec.input_names
    onnx_path = out / "pi05.onnx"
    t0 = time.perf_counter()
    print(f"exporting; rss {_rss_gb():.1f} GB", flush=True)
    # The command's own path (policy-export onnx): the flow steps as one ONNX Loop, and the weights as
    # external data once they pass protobuf's 2 GB. Its quick check is left out: the parity below is it.
    result = export_onnx(ckpt, onnx_path, force=True, quick_check=False)
    summary["exporter"] = result.exporter
    summary["external_data_gb"] = result.external_data.stat().st_size / 2**30 if result.external_data else 0.0
    summary["export_s"], summary["export_peak_rss_gb"] = time.perf_counter() - t0, _peak_gb()
    print(f"exported in {summary['export_s']:.0f} s; peak rss so far {_peak_gb():.1f} GB", flush=True)
    del ckpt, model, pwe, family
    gc.collect()
    summary["rss_after_free_gb"] = _rss_gb()

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    summary["ort_load_s"], summary["rss_ort_gb"] = time.perf_counter() - t0, _rss_gb()
    ort_ms, got = _timed(lambda: sess.run(None, {n: feed[n] for n in names})[0], args.iterations)
    got_rtc = sess.run(None, {n: rtc_feed[n] for n in names})[0]
    summary["ort_ms"] = ort_ms
    summary["speedup"] = statistics.median(eager_ms) / statistics.median(ort_ms)
    summary["max_abs_robot"] = float(np.abs(got - want).max())
    summary["max_abs_robot_rtc"] = float(np.abs(got_rtc - want_rtc).max())
    summary["peak_rss_gb"] = _peak_gb()
    summary["load_average"] = os.getloadavg()
    (out / "pi05-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
