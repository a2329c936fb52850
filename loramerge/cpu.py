"""What this machine's CPU is and which native bf16 units it has, read from /proc/cpuinfo at run time.

Every measured number says where it was measured, and precision `auto` picks bf16 only where the CPU computes it
natively; reading the flags needs no torch, so the report and the benchmarks' headers pay nothing for it.
"""

from __future__ import annotations

import platform
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of native bf16 units: AMX tiles, or AVX-512's bf16 dot products."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    if not cpuinfo.exists():
        return set()
    return {
        w
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.startswith("flags")
        for w in line.split()
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC …", "Intel(R) Xeon(R) …"): every measured number says where it was measured."""
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bf16_units(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The native bf16 units this CPU has, by /proc/cpuinfo flag (empty: none, or not Linux)."""
    flags = cpu_flags(cpuinfo)
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 flags); read at run time."""
    return bool(bf16_units(cpuinfo))
