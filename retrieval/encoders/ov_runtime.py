"""What a compiled OpenVINO model actually runs, read back from its execution graph: precision and kernels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

# the nodes that carry the arithmetic (everything else is reshapes, reorders and element-wise work)
HEAVY = frozenset({"FullyConnected", "FullyConnectedCompressed", "MatMul", "Convolution", "ScaledDotProductAttention"})
# the suffix of a kernel's implementation type ("brgemm_avx512_bf16", "jit_gemm_I8") -> our precision names
_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
_ISAS = ("amx", "avx512", "avx2", "sse42")  # most specific first: "brgemm_avx512_amx" is amx


@dataclass(frozen=True)
class RuntimeFacts:
    """The precision most of the heavy nodes compute in, the instruction set of their kernels, their kernels."""

    precision: str  # "fp32" | "bf16" | "int8" | "fp16" | "unknown"
    isa: str  # "avx512" | "avx2" | "amx" | ... | "unknown"
    kernels: dict[str, int]  # implementation type -> heavy nodes using it, e.g. {"brgemm_avx2_f32": 72}
    int8_weights: bool = False  # weights stored as int8 and decompressed to `precision` (weight-only)
    hint: str = ""  # the compiled model's INFERENCE_PRECISION_HINT as OpenVINO resolved it ("f32", "bf16")

    @property
    def summary(self) -> str:
        """E.g. "fp32 on avx2 (int8 weights)"; "fp32" alone when no kernel names its instruction set (MLAS)."""
        extra = " (int8 weights)" if self.int8_weights and self.precision != "int8" else ""
        where = f" on {self.isa}" if self.isa != "unknown" else ""
        return f"{self.precision}{where}{extra}"


def _text(value: Any) -> str:
    return str(value.astype(str)) if hasattr(value, "astype") else str(value)


def precision_of(kernel: str) -> str:
    """ "brgemm_avx2_f32" -> "fp32", "jit_gemm_I8" -> "int8"; "unknown" for a kernel not chosen yet ("undef_f32")."""
    if kernel.startswith("undef"):
        return "unknown"
    return _PRECISION.get(kernel.rsplit("_", 1)[-1].lower(), "unknown")


def isa_of(kernel: str) -> str:
    """ "brgemm_avx512_bf16" -> "avx512"; a kernel that names none (e.g. "jit_gemm_I8", "ref_f32") -> "unknown"."""
    lower = kernel.lower()
    return next((isa for isa in _ISAS if isa in lower), "unknown")


def read_back(compiled: Any) -> RuntimeFacts:
    """The facts of a compiled model. Run one inference first: with a dynamic batch the kernels are only chosen
    then (before it every node reports "undef_...")."""
    kernels: Counter[str] = Counter()
    weights: Counter[str] = Counter()
    elsewhere: Counter[str] = Counter()  # the other nodes' instruction sets, when the heavy kernels name none
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if _text(info["layerType"]) not in HEAVY:
            elsewhere[isa_of(_text(info["primitiveType"]))] += 1
            continue
        kernel = _text(info["primitiveType"])
        kernels[kernel] += 1
        if "runtimePrecision" in info:
            weights[_text(info["runtimePrecision"]).lower()] += 1
    hint = _hint(compiled)
    if not kernels:
        return RuntimeFacts("unknown", "unknown", {}, hint=hint)
    by_precision: Counter[str] = Counter()
    by_isa: Counter[str] = Counter()
    for kernel, count in kernels.items():
        by_precision[precision_of(kernel)] += count
        by_isa[isa_of(kernel)] += count
    precision = by_precision.most_common(1)[0][0]
    known = [isa for isa, _ in [*by_isa.most_common(), *elsewhere.most_common()] if isa != "unknown"]
    isa = known[0] if known else "unknown"
    int8_weights = precision != "int8" and weights["u8"] + weights["i8"] > sum(weights.values()) / 2
    return RuntimeFacts(precision, isa, dict(kernels), int8_weights, hint)


def _hint(compiled: Any) -> str:
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # a plugin without the property: the execution graph alone says it
        return ""
    return str(getattr(value, "to_string", lambda: value)())
