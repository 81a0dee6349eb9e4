"""The machine a benchmark ran on, in one line: CPU model and the SIMD flags the figures depend on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from retrieval.cpu import CPUINFO, RELEVANT, read_cpu_features

CAPS = ("ONEDNN_MAX_CPU_ISA", "OV_CPU_MAX_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")  # ISA caps in force
FLAGS = RELEVANT  # what FAISS, OpenVINO and torch pick their kernels by, the encoder's choices included


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module says, else "unknown CPU"."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """Which of FLAGS this CPU lists (in FLAGS order); empty when /proc/cpuinfo cannot be read."""
    present = read_cpu_features(cpuinfo) or frozenset()
    return [flag for flag in FLAGS if flag in present]


def cpu_line(cpuinfo: Path = CPUINFO) -> str:
    """E.g. "CPU: AMD EPYC, 2 cores, flags avx2 avx512f avx512_vnni avx512_bf16 (no amx)"."""
    flags = cpu_flags(cpuinfo)
    amx = "" if any(f.startswith("amx") for f in flags) else " (no amx)"
    listed = " ".join(flags) if flags else "none of " + "/".join(FLAGS)
    caps = [f"{name}={os.environ[name]}" for name in CAPS if name in os.environ]
    capped = f"; kernels capped by {' '.join(caps)}" if caps else ""
    return f"CPU: {cpu_model(cpuinfo)}, {os.cpu_count()} cores, flags {listed}{amx}{capped}"


def cpu_facts(cpuinfo: Path = CPUINFO) -> dict[str, object]:
    """The same facts for a JSON report."""
    return {
        "cpu_model": cpu_model(cpuinfo),
        "cpu_flags": cpu_flags(cpuinfo),
        "cpus": os.cpu_count(),
        "cpu": cpu_line(cpuinfo),
    }
