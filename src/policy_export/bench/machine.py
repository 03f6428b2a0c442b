"""What the numbers were measured on: CPU, cores, memory, library versions.

Read from /proc and package metadata only (no torch import), so the parent process of a
benchmark stays light and does not compete with the workers it is timing.
"""

from __future__ import annotations

import os
import platform
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
