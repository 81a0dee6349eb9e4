"""What this CPU computes natively: one small function (`cpu_features`) that tests replace to play another host."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from retrieval.optional import import_openvino

CPUINFO = Path("/proc/cpuinfo")
# the flags the encoder's choices depend on (others are not reported)
RELEVANT = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# int8 dot products without the 16-bit saturation of AVX2's vpmaddubsw: without them OpenVINO's int8 kernels drift
# (min cosine 0.945 against fp32 measured on an AVX2-only AMD EPYC, against 0.99+ with AVX-512 VNNI)
INT8_FLAGS = frozenset({"avx512_vnni", "amx_int8"})
# what an instruction-set cap leaves of RELEVANT: OV_CPU_MAX_ISA (OpenVINO's kernels) and ONEDNN_MAX_CPU_ISA (oneDNN's)
# set together make OpenVINO run here as on a smaller CPU (bench/encoder.py --isa avx2): the product follows them
ISA_CAPS = {
    "AVX2": frozenset({"avx2"}),
    "AVX2_VNNI": frozenset({"avx2", "avx_vnni"}),
    "AVX512_CORE": frozenset({"avx2", "avx512f"}),
    "AVX512_CORE_VNNI": frozenset({"avx2", "avx512f", "avx512_vnni"}),
    "AVX512_CORE_BF16": frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}),
}
# OpenVINO's names, for a system without /proc/cpuinfo
_OPENVINO_NAMES = {"BF16": "avx512_bf16"}  # its "INT8" does not tell VNNI apart: int8 stays refused


def read_cpu_features(cpuinfo: Path) -> frozenset[str] | None:
    """The relevant flags listed in a /proc/cpuinfo file, or None when it cannot be read."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return None
    return frozenset(flag for flag in RELEVANT if flag in flags)


def capped(features: frozenset[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> frozenset[str]:
    """`features` less what OV_CPU_MAX_ISA / ONEDNN_MAX_CPU_ISA forbid (the lower of the two when both are set)."""
    for name in ("OV_CPU_MAX_ISA", "ONEDNN_MAX_CPU_ISA"):
        allowed = ISA_CAPS.get(environ.get(name, "").upper())
        if allowed is not None:
            features = features & allowed
    return features


@functools.cache
def cpu_features() -> frozenset[str]:
    """The relevant flags of this machine's CPU (read once), less an instruction-set cap; elsewhere than Linux,
    what OpenVINO reports."""
    features = read_cpu_features(CPUINFO)
    if features is not None:
        return capped(features)
    try:
        ov = import_openvino("Reading the CPU's features from OpenVINO")
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return frozenset()
    return frozenset(_OPENVINO_NAMES[name] for name in capabilities if name in _OPENVINO_NAMES)


def has_bf16(features: frozenset[str]) -> bool:
    """bf16 computed natively (AVX-512 BF16 or AMX)."""
    return bool(features & BF16_FLAGS)


def has_exact_int8(features: frozenset[str]) -> bool:
    """int8 dot products that keep the int8 model's promise (AVX-512 VNNI or AMX)."""
    return bool(features & INT8_FLAGS)


def avx2_only(features: frozenset[str]) -> bool:
    """AVX2 but no AVX-512, bf16 or VNNI int8: the CPUs int8-reduced is measured on (issue 22)."""
    return "avx2" in features and not features & (BF16_FLAGS | INT8_FLAGS | {"avx512f", "avx_vnni"})
