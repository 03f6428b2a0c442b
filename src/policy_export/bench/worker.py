"""The benchmark worker: one process per backend, its thread count fixed before any runtime loads.

Started by :mod:`policy_export.bench.harness` as ``python -m policy_export.bench.worker FD``
with the thread-count variables already in its environment. It talks to the parent over
a socket (a ``multiprocessing`` Connection) and never writes to stdout, so a chatty
runtime cannot corrupt the protocol. The parent decides *when* each worker runs, which
is how backends are interleaved call by call under the same machine conditions.

Every call is timed here, around the backend call only, with the process's CPU time and
page faults alongside: a backend that spends its time in the kernel (page faults from
a growing allocator) should show it, not hide it in one wall-clock number.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from policy_export.bench.workloads import Workload, make_workload

THREADS_ENV = "POLICY_EXPORT_BENCH_THREADS"
#: Every thread pool a backend may bring: OpenMP (torch, ORT builds with OpenMP), MKL, OpenBLAS.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a worker: must be in place before torch / onnxruntime are imported."""
    env = {name: str(threads) for name in THREAD_VARS}
    env[THREADS_ENV] = str(threads)
    return env


def _peak_rss_mb() -> float:
    """High-water resident set (VmHWM), resettable per phase via ``reset_peak``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB, never reset


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


class Worker:
    """Message loop state: one backend, its current input feed, its last output."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.workload: Workload | None = None
        self.feed: dict[str, np.ndarray] | None = None
        self.output: Any = None

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "load":
            self.workload = make_workload(args, self.threads)
            info = self.workload.load()
            info["rss_mb"] = _peak_rss_mb()
            return info
        assert self.workload is not None, "load first"
        if op == "flops":
            return self.workload.flops()  # type: ignore[attr-defined]
        if op == "measure":
            return self.workload.measure(int(args["size"]), float(args["seconds"]))  # type: ignore[attr-defined]
        if op == "feed":
            self.feed = args["feed"]
            self.output = None
            return {"peak_reset": _reset_peak()}
        if op == "run":
            return [self._timed_call() for _ in range(int(args.get("calls", 1)))]
        if op == "output":
            return None if self.output is None else np.asarray(self.output, dtype=np.float32)
        if op == "peak":
            return _peak_rss_mb()
        raise ValueError(f"unknown op {op!r}")

    def _timed_call(self) -> dict[str, float]:
        assert self.workload is not None and self.feed is not None, "feed first"
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = self.workload.infer(self.feed)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if self.output is None:
            self.output = out
        return {
            "wall_s": wall,
            "user_s": r1.ru_utime - r0.ru_utime,
            "sys_s": r1.ru_stime - r0.ru_stime,
            "minor_faults": float(r1.ru_minflt - r0.ru_minflt),
            "preempted": float(r1.ru_nivcsw - r0.ru_nivcsw),
        }


def serve(conn: Connection, threads: int) -> None:
    worker = Worker(threads)
    while True:
        try:
            op, args = conn.recv()
        except EOFError:
            break
        if op == "close":
            if worker.workload is not None:
                worker.workload.close()
            conn.send(("ok", None))
            break
        try:
            conn.send(("ok", worker.handle(op, args)))
        except Exception as exc:
            from policy_export.errors import PolicyExportError

            if isinstance(exc, PolicyExportError):
                conn.send(("error", (type(exc).__name__, str(exc))))
            else:
                conn.send(("crash", (f"{type(exc).__name__}: {exc}", traceback.format_exc())))


def main(argv: list[str]) -> None:
    threads = int(os.environ.get(THREADS_ENV, "0")) or (os.cpu_count() or 1)
    for name, value in thread_env(threads).items():
        os.environ.setdefault(name, value)
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    conn = Connection(int(argv[1]))
    try:
        serve(conn, threads)
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv)
