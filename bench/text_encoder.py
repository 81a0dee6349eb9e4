"""What a new text query costs in MedSigLIP's full-size text tower, per back end, side by side in one run.

A text typed for the first time goes through the text tower (64 tokens); a text seen before comes from the
query cache, and the rest of a text search costs about a millisecond (BENCHMARKS.md, issue 22). Back ends: torch
fp32 with eager and with sdpa attention (the product's torch back end), OpenVINO fp32 and OpenVINO with the bf16
hint (what `auto` runs on a CPU with AVX-512 BF16 or AMX; without them OpenVINO compiles the hint to fp32, and the
row's read-back says so). Every text is embedded once by every back end, the order rotated text by text, one text
per call on the wall clock (a query waits for it). Cosines: each back end's vectors against torch fp32 sdpa.
Random weights (no model hub here): the times are the real tower's, the cosines only show the numerics.

    python bench/text_encoder.py [--texts 24] [--isa avx2] [--full-model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from encoder import ISA_CAPS, rerun_capped, torch_runs  # type: ignore[import-not-found]
from machine import cpu_line  # type: ignore[import-not-found]

from retrieval.encoders.medsiglip import MedSigLIPEncoder
from retrieval.encoders.ov_encoder import OpenVINOEncoder
from retrieval.encoders.ov_runtime import read_back
from retrieval.encoders.standin import FULL_TEXT, build_standin_model

BACKENDS = ("torch-eager", "torch-sdpa", "openvino-fp32", "openvino-bf16")
REFERENCE = "torch-sdpa"
FINDINGS = (
    "right lower lobe consolidation",
    "small left pleural effusion with adjacent atelectasis",
    "no acute cardiopulmonary abnormality",
    "spiculated nodule in the right upper lobe, suspicious for malignancy",
    "cardiomegaly with pulmonary vascular congestion",
    "displaced fracture of the distal radius",
    "pneumothorax at the left apex",
    "ground-glass opacities in both lower lobes",
)


def texts(count: int) -> list[str]:
    """`count` different texts (each new to the encoder: nothing here is cached)."""
    return [f"{FINDINGS[n % len(FINDINGS)]} ({n // len(FINDINGS) + 1})" for n in range(count)]


def runners(model_dir: Path, data_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Each back end's one-text call, and what it runs (read back after a first call)."""
    torch_encoder = MedSigLIPEncoder(str(model_dir), "cpu", "fp32")
    torch_encoder.load()

    def torch_call(attention: str) -> Any:
        def call(text: str) -> np.ndarray:
            torch_encoder.torch_model.set_attn_implementation(attention)
            return torch_encoder.encode_texts([text])[0]

        return call

    calls: dict[str, Any] = {"torch-eager": torch_call("eager"), "torch-sdpa": torch_call("sdpa")}
    runs = {name: torch_runs(torch_encoder) for name in calls}
    for precision in ("fp32", "bf16"):
        encoder = OpenVINOEncoder(str(model_dir), data_dir, precision, bf16_hint=precision == "bf16")
        encoder.load()
        calls[f"openvino-{precision}"] = lambda text, e=encoder: e.encode_texts([text])[0]
        calls[f"openvino-{precision}"]("warm up")
        facts = read_back(encoder._text.compiled)  # the text tower's own kernels (it ran above)
        runs[f"openvino-{precision}"] = f"{facts.summary}: " + ", ".join(f"{k} x{n}" for k, n in facts.kernels.items())
    return calls, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=24, help="new texts, each embedded once per back end")
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap every library's kernels at this instruction set")
    parser.add_argument("--full-model", type=Path, help="reuse a stand-in with the full-size text tower built here")
    args = parser.parse_args(argv)
    rerun_capped(args.isa, __file__, argv)
    print(cpu_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="medsearch-text-bench-") as tmp:
        model_dir = args.full_model
        if model_dir is None or not (model_dir / "config.json").is_file():
            print("building the stand-in with MedSigLIP's full-size text tower...", file=sys.stderr, flush=True)
            target = model_dir or Path(tmp, "model")
            model_dir = build_standin_model(target, width=1152, layers=1, heads=16, intermediate=4304, text=FULL_TEXT)
        calls, runs = runners(model_dir, Path(tmp, "data"))
        names = list(calls)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        vectors: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for n, text in enumerate(texts(args.texts)):
            for name in names[n % len(names) :] + names[: n % len(names)]:  # each back end in every place
                start = time.perf_counter()
                vectors[name].append(calls[name](text))
                seconds[name].append(time.perf_counter() - start)
    reference = np.stack(vectors[REFERENCE])
    tower = f"width {FULL_TEXT.width}, {FULL_TEXT.layers} layers, {FULL_TEXT.heads} heads, MLP {FULL_TEXT.intermediate}"
    print(f"\n{args.texts} new texts, one per call, back ends rotated; random text tower: {tower}, 64 tokens")
    print(f"| back end | ms per new text (median) | x torch-eager | min cosine vs {REFERENCE} |")
    print("|---|---:|---:|---:|")
    for name in names:
        ratios = [b / t for b, t in zip(seconds["torch-eager"], seconds[name], strict=True)]
        cosine = float(np.min(np.sum(np.stack(vectors[name]) * reference, axis=1)))
        median = 1000 * statistics.median(seconds[name])
        print(f"| {name} | {median:.0f} | {statistics.median(ratios):.1f}x | {cosine:.6f} |")
    print("\nwhat each back end runs (torch: dtype and ATen's instruction set; OpenVINO: the text tower read back):")
    for name in names:
        print(f"- {name}: {runs[name]}")
    print(cpu_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
