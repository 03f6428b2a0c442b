"""What this CPU can do below fp32, read from the kernel (``/proc/cpuinfo``).

Plain Python (no numpy, no runtime): the robot runtime, ``bench`` and ``quantize`` all ask it.
Reduced precision pays only with native instructions: int8 needs VNNI (``avx512_vnni`` or
``avx_vnni``; without it int8 gave 1.26x on an AVX2 machine, FACTS.md), and bf16 needs
``avx512_bf16`` or AMX (without them OpenVINO runs a bf16 hint as fp32: no gain, nothing lost).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

#: Replaces the flags read from /proc/cpuinfo (space-separated): lets tests and users ask
#: "what would happen on an AVX2-only CPU" without one. Recorded as overridden wherever it is used.
FLAGS_ENV = "POLICY_EXPORT_CPU_FLAGS"

#: The flags that decide reduced-precision speed, in the order bench prints them.
RELEVANT = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] = field(default_factory=frozenset)
    #: True when the flags came from ``POLICY_EXPORT_CPU_FLAGS``, not the hardware.
    overridden: bool = False

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return bool({"amx_tile", "amx_int8", "amx_bf16"} & self.flags)

    def summary(self) -> str:
        """One line for tables: the model and yes/no for the three features that matter."""

        def yn(b: bool) -> str:
            return "yes" if b else "no"

        src = " (flags overridden by POLICY_EXPORT_CPU_FLAGS)" if self.overridden else ""
        return f"{self.model}: VNNI {yn(self.vnni)}, BF16 {yn(self.bf16)}, AMX {yn(self.amx)}{src}"

    def record(self) -> dict[str, Any]:
        """What an artifact records about the CPU it was calibrated or measured on."""
        d = asdict(self)
        d["flags"] = sorted(f for f in self.flags if f in RELEVANT)
        d.update(vnni=self.vnni, bf16=self.bf16, amx=self.amx)
        return d


def cpu_info() -> CpuInfo:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    override = os.environ.get(FLAGS_ENV)
    if override is not None:
        return CpuInfo(model, frozenset(override.split()), overridden=True)
    return CpuInfo(model, frozenset(flags))


def precision_gain_warning(precision: str, info: CpuInfo | None = None) -> str | None:
    """Why ``precision`` will not be faster than fp32 on this CPU, or None when it should be."""
    info = info or cpu_info()
    if precision == "bf16" and not info.bf16:
        return "bf16 will not be faster here: this CPU has neither avx512_bf16 nor amx_bf16 (runs as fp32)"
    if precision == "int8" and not info.vnni:
        return "int8 gains little here: this CPU has no VNNI (avx512_vnni/avx_vnni/amx_int8); measured 1.26x on AVX2"
    return None
