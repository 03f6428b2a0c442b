"""Where an ONNX export's peak memory goes: resident memory per phase of ``export_onnx``.

The default SmolVLA export peaked at 11.5 GB; a single figure from ``/usr/bin/time -v`` says
how much, not which step. This runs the same ``export_onnx`` the CLI runs, in-process, and
wraps each phase (loading the checkpoint, the exporter, ``onnx.load``, sharing identical
initializers, ``onnx.save``, the checker, the quick parity check) to record the resident set on
entry and the kernel's high-water mark inside it (Linux: ``VmHWM``, reset per phase). The
stretches between wrapped phases (building the core, metadata) show as "between" rows.
Prints a table and writes JSON. Run big models under ``flock /tmp/bigmem.lock``.

    python benchmarks/export_memory.py --checkpoint CKPT --output /tmp/x.onnx --json reports/mem.json
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


class _Sampler:
    """The kernel's high-water mark of this process's resident set (``VmHWM``), reset per phase
    through ``/proc/self/clear_refs`` ("5"). A polling thread would miss peaks inside C calls
    that hold the GIL (protobuf parsing and serialising), which is where several of them are."""

    @property
    def peak(self) -> float:
        return _status_mib("VmHWM")

    def reset(self) -> float:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _rss_mib()

    def stop(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)

    import onnx

    from policy_export.checkpoint import load_checkpoint
    from policy_export.export import onnx as export_mod

    sampler = _Sampler()
    phases: list[dict[str, Any]] = []

    depth = [0]
    last_exit = [0.0, time.perf_counter()]

    def between(name: str) -> None:
        """The stretch since the last phase ended, when it rose above where that phase left off."""
        peak, now = sampler.peak, _rss_mib()
        if peak > last_exit[0] + 64:
            phases.append(
                {
                    "phase": f"(between, before {name})",
                    "rss_on_entry_mib": last_exit[0],
                    "peak_rss_mib": peak,
                    "rss_on_exit_mib": now,
                    "seconds": time.perf_counter() - last_exit[1],
                }
            )

    def traced(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            if depth[0]:  # called from inside another traced phase: counted there
                return fn(*a, **k)
            between(name)
            depth[0] += 1
            start = sampler.reset()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                phases.append(
                    {
                        "phase": name,
                        "rss_on_entry_mib": start,
                        "peak_rss_mib": max(sampler.peak, _rss_mib()),
                        "rss_on_exit_mib": _rss_mib(),
                        "seconds": time.perf_counter() - t0,
                    }
                )
                last_exit[:] = [_rss_mib(), time.perf_counter()]
                sampler.reset()

        return wrapper

    export_mod._export = traced("exporter", export_mod._export)  # type: ignore[assignment]
    export_mod._share_identical_initializers = traced(  # type: ignore[assignment]
        "share initializers", export_mod._share_identical_initializers
    )
    export_mod._quick_check = traced("quick parity check", export_mod._quick_check)  # type: ignore[assignment]
    onnx.load = traced("onnx.load", onnx.load)  # type: ignore[assignment]
    onnx.save = traced("onnx.save", onnx.save)  # type: ignore[assignment]
    onnx.checker.check_model = traced("checker", onnx.checker.check_model)  # type: ignore[assignment]

    base = sampler.reset()
    t0 = time.perf_counter()
    ckpt = traced("load checkpoint", load_checkpoint)(args.checkpoint)
    export_mod.export_onnx(ckpt, args.output, force=True)
    between("the end")
    total_s = time.perf_counter() - t0
    sampler.stop()
    overall = max(p["peak_rss_mib"] for p in phases)
    report = {
        "checkpoint": str(args.checkpoint),
        "rss_before_mib": base,
        "peak_rss_mib": overall,
        "seconds": total_s,
        "onnx_mb": args.output.stat().st_size / 2**20,
        "phases": phases,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("| phase | RSS on entry MiB | peak MiB | RSS on exit MiB | s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for p in phases:
        print(
            f"| {p['phase']} | {p['rss_on_entry_mib']:.0f} | {p['peak_rss_mib']:.0f} | "
            f"{p['rss_on_exit_mib']:.0f} | {p['seconds']:.1f} |"
        )
    print(
        f"peak {overall:.0f} MiB (whole process, getrusage: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB), {total_s:.0f} s, {report['onnx_mb']:.0f} MB file; wrote {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
