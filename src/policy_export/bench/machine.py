"""The machine under the numbers: what it is (CPU, cores, memory, library versions) and how busy it is.

Read from /proc and package metadata only (no torch import), so the parent process of a
benchmark stays light and does not compete with the workers it is timing. The load
sampling (:func:`machine_cpu_seconds`, :class:`Quiet`) is what lets a timed round on a
shared machine be thrown away and run again when other processes took the CPUs.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from policy_export.versions import library_versions

#: CPU features that decide which kernels MLAS / oneDNN / MKL pick.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")
#: Besides the libraries every artifact records (:func:`policy_export.versions.library_versions`).
EXTRA_PACKAGES = ("onnxruntime-gpu", "numpy", "tensorrt")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if not sep:
                    if info:
                        break  # first processor block is enough
                    continue
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu": cpu.get("model name", platform.processor() or platform.machine()),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "cpu_mhz": cpu.get("cpu MHz"),
        "kernel_flags": [f for f in KERNEL_FLAGS if f in flags],
        "hypervisor": "hypervisor" in flags,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gb": _mem_total_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": library_versions(*EXTRA_PACKAGES),
    }


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU-seconds the whole machine has been busy, and stolen by the hypervisor, so far.

    Sampled around every timed call: busy time minus the worker's own CPU time is what
    other processes took while we were timing, the honest measure of how quiet the run was.
    """
    try:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fh.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


class Quiet:
    """Tells whether other processes are leaving the CPUs to us, and waits until they do.

    Shared machines (a developer box, a CI runner, a robot computer with camera drivers)
    are the norm. A timed round during which other processes took more than
    ``max_background`` of the CPUs is thrown away and run again, for every backend alike,
    up to twice as many extra rounds as requested; what was discarded is reported. Waiting
    for a quiet moment before a round is capped (``max_wait_s`` per round, ``budget_s`` per
    run), so a machine that never quiets down still gets measured, its load in the report.
    """

    def __init__(self, max_background: float, max_wait_s: float, budget_s: float = 120.0) -> None:
        self.limit = max_background
        self.max_wait_s = max_wait_s
        self.budget_s = budget_s
        self.waited_s = 0.0
        self.cpus = os.cpu_count() or 1

    @property
    def enabled(self) -> bool:
        return self.limit < 1.0

    def others_share(self, busy_s: float, own_cpu_s: float, window_s: float) -> float:
        return max(0.0, busy_s - own_cpu_s) / (window_s * self.cpus) if window_s > 0 else 0.0

    def wait(self) -> None:
        if not self.enabled:
            return
        start = time.monotonic()
        deadline = start + min(self.max_wait_s, max(0.0, self.budget_s - self.waited_s))
        try:
            while time.monotonic() < deadline:
                b0, t0 = machine_cpu_seconds()[0], time.perf_counter()
                time.sleep(0.25)
                if self.others_share(machine_cpu_seconds()[0] - b0, 0.0, time.perf_counter() - t0) <= self.limit:
                    return
        finally:
            self.waited_s += time.monotonic() - start

    def ok(self, share: float) -> bool:
        return not self.enabled or not share > self.limit
