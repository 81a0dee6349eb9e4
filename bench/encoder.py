"""Encoder benchmark: full-size MedSigLIP vision tower, torch fp32 vs each OpenVINO precision, ratios side by side."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ingest.py: the corpus and the full-size sizes

import numpy as np
import numpy.typing as npt
from ingest import FULL, _short, corpus, spread  # type: ignore[import-not-found]
from machine import cpu_facts, cpu_line  # type: ignore[import-not-found]

from retrieval.encoders import ov_encoder
from retrieval.encoders.factory import cpu_has_bf16
from retrieval.encoders.medsiglip import MedSigLIPEncoder
from retrieval.encoders.ov_encoder import OpenVINOEncoder
from retrieval.encoders.standin import build_standin_model
from retrieval.prepare import prepare_bytes

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
BACKENDS = (
    "torch-eager",
    "torch-sdpa",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-int8",
    "openvino-int8-reduced",
    "openvino-int8-weights",
)
# --isa avx2: every library's kernels capped at AVX2, to measure here what an AVX2-only server runs. oneDNN (torch's
# and OpenVINO's) honours ONEDNN_MAX_CPU_ISA; OpenVINO's own kernels and choices (bf16, weight decompression) honour
# OV_CPU_MAX_ISA (both must be set together); MKL honours MKL_ENABLE_INSTRUCTIONS; ATen's own vectorised code
# ATEN_CPU_CAPABILITY. Each row's kernels are read back to show the cap held.
ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OV_CPU_MAX_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    }
}
BASELINE = "torch-eager"  # speed reference: the "torch fp32 eager"
REFERENCE = "torch-sdpa"  # cosine reference: the product's torch fp32 (eager attention gives the same to ~1e-6)


def rerun_capped(isa: str | None, script: str, argv: list[str] | None) -> None:
    """Run `script` again with `isa`'s caps in the environment unless they are in force already: the libraries read
    them when they load, so they must be set before any is imported."""
    caps = ISA_CAPS.get(isa or "", {})
    if caps and any(os.environ.get(k) != v for k, v in caps.items()):
        again = [sys.executable, script, *(argv if argv is not None else sys.argv[1:])]
        os.execve(sys.executable, again, {**os.environ, **caps})


def architecture(model_dir: Path) -> str:
    """The vision tower measured, from the model's own config (a --full-model folder may be any size)."""
    vision = json.loads((model_dir / "config.json").read_text())["vision_config"]
    return (
        f"random SigLIP vision tower: width {vision['hidden_size']}, {vision['num_hidden_layers']} layers, "
        f"{vision['num_attention_heads']} heads, MLP {vision['intermediate_size']}, patch {vision['patch_size']}, "
        f"{vision['image_size']} px"
    )


def frames_of(paths: list[Path], processor: Any) -> npt.NDArray[np.float32]:
    """Files prepared exactly as the indexer prepares them (middle frame, default CT window)."""
    return np.concatenate([prepare_bytes(p.read_bytes(), processor).pixel_values for p in paths])


class TorchRunner:
    """The product's torch encoder; `eager` switches its attention to the eager implementation (the baseline)."""

    def __init__(self, encoder: MedSigLIPEncoder, attention: str) -> None:
        self.encoder = encoder
        self.attention = attention

    def __call__(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.encoder.torch_model.set_attn_implementation(self.attention)
        return self.encoder.encode_pixel_values(pixels)


_TORCH: dict[Path, MedSigLIPEncoder] = {}  # eager and sdpa share one loaded model
RUNS: dict[str, str] = {}  # back end -> what it runs, read back after loading


def torch_runs(encoder: MedSigLIPEncoder) -> str:
    """The torch model's dtype and the instruction set ATen dispatches to (MKL and oneDNN follow the caps set)."""
    import torch

    dtype = str(next(encoder.torch_model.parameters()).dtype).removeprefix("torch.")
    return f"{dtype} on {torch.backends.cpu.get_cpu_capability().lower()} (ATen)"


def make_runner(name: str, model_dir: Path, data_dir: Path, calibration: Path | None) -> Any:
    """One back end, loaded (OpenVINO from the cache the load measurements filled)."""
    if name.startswith("torch-"):
        if model_dir not in _TORCH:
            _TORCH[model_dir] = MedSigLIPEncoder(str(model_dir), "cpu", "fp32")
            _TORCH[model_dir].load()
        RUNS[name] = torch_runs(_TORCH[model_dir])
        return TorchRunner(_TORCH[model_dir], name.removeprefix("torch-"))
    precision = name.removeprefix("openvino-")
    source = None
    if precision in ("int8", "int8-reduced"):
        assert calibration is not None
        frames = list(np.load(calibration))
        source = lambda _processor, limit: frames[:limit]  # noqa: E731
    # as the product's factory builds it: int8 with the bf16 hint for its unquantised parts where the CPU has bf16
    hint = precision == "int8" and cpu_has_bf16()
    encoder = OpenVINOEncoder(str(model_dir), data_dir, precision, calibration=source, bf16_hint=hint)
    encoder.load()
    assert encoder.runtime is not None
    RUNS[name] = f"{encoder.runtime.summary}: {', '.join(f'{k} x{n}' for k, n in encoder.runtime.kernels.items())}"
    if source is not None:  # what the product's gate measured at quantisation, on the calibration images
        facts = json.loads((encoder.cache_dirs[-1] / "manifest.json").read_text())
        worst, count = facts.get("min_cosine_vs_fp32"), facts.get("validation_images")
        verdict = "kept" if encoder.precision == precision else "refused: fp32 runs"
        verdict = "not applied (--ungated)" if ov_encoder.MIN_INT8_COSINE < 0 else verdict
        RUNS[name] += f"; the gate measured min cosine {worst} on {count} calibration images, {verdict}"
    return encoder.encode_pixel_values


def measure_load(name: str, model_dir: Path, data_dir: Path, calibration: Path | None) -> dict[str, float]:
    """Run in a child process: load (and convert) one back end, one image; seconds and peak RSS."""
    t0 = time.perf_counter()
    run = make_runner(name, model_dir, data_dir, calibration)
    seconds = time.perf_counter() - t0
    run(np.zeros((1, 3, 448, 448), dtype=np.float32))
    return {"load_seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def child_load(name: str, model_dir: Path, data_dir: Path, calibration: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", name, "--full-model", str(model_dir), "--data", str(data_dir)]
    cmd += ["--calibration", str(calibration)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def conversion_seconds(model_dir: Path, data_dir: Path) -> dict[str, str]:
    """Conversion and quantisation times as the product recorded them in its cache manifests."""
    found: dict[str, str] = {}
    for manifest in [
        *model_dir.glob(".medsearch-openvino/*/manifest.json"),
        *data_dir.glob("openvino-cache/*/manifest.json"),
    ]:
        facts = json.loads(manifest.read_text())
        if "convert_seconds" in facts:
            found["openvino-fp32"] = f"{facts['convert_seconds']:.0f} (both towers)"
            found["openvino-bf16"] = "0 (the fp32 IR)"
        if "quantize_seconds" in facts:
            found["openvino-int8"] = f"+{facts['quantize_seconds']:.0f} ({facts['calibration_images']} images)"
    return found


def timed(run: Any, frames: npt.NDArray[np.float32], batch: int) -> tuple[float, npt.NDArray[np.float32]]:
    """Seconds per image over `frames`, `batch` at a time, and the vectors."""
    t0 = time.perf_counter()
    out = [run(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    return (time.perf_counter() - t0) / len(frames), np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds, back ends interleaved (default 2)")
    parser.add_argument("--images", type=int, default=16, help="real images for the cosines (>= 16)")
    parser.add_argument("--timed-images", type=int, default=8, help="images timed per back end and round at batch 8")
    parser.add_argument("--timed-single", type=int, default=4, help="images timed per back end and round at batch 1")
    parser.add_argument("--calibration-images", type=int, default=32, help="int8 calibration images (not evaluated)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset")
    parser.add_argument("--full-model", type=Path, help="reuse a full-size stand-in built in this folder")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap every library's kernels at this instruction set")
    parser.add_argument("--ungated", action="store_true", help="time int8 schemes even where the gate refuses them")
    parser.add_argument("--skip-loads", action="store_true", help="no child-process load measurements")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--calibration", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rerun_capped(args.isa, __file__, argv)
    if args.ungated:  # the product keeps an int8 scheme only at MIN_INT8_COSINE; here every scheme is measured
        ov_encoder.MIN_INT8_COSINE = -1.0
    if args.child:
        print(json.dumps(measure_load(args.child, args.full_model, args.data, args.calibration)))
        return 0

    import openvino as ov
    import torch

    names = [n for n in args.backends.split(",") if n]
    baseline = BASELINE if BASELINE in names else names[0]
    reference = REFERENCE if REFERENCE in names else names[0]
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/encoder.py", *(argv if argv is not None else sys.argv[1:])]),
        **cpu_facts(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openvino": ov.get_version(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "isa_cap": {k: os.environ[k] for k in ISA_CAPS["avx2"] if k in os.environ},
    }
    print(cpu_line(), flush=True)
    print(f"machine: {info}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="medsearch-encoder-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.full_model
        if model_dir is None:
            print("building the full-size stand-in...", file=sys.stderr, flush=True)
            model_dir = build_standin_model(work / "full", **FULL)
        processor = MedSigLIPEncoder(str(model_dir), "cpu").image_processor
        samples = sorted(p for p in SAMPLES.iterdir() if p.suffix == ".dcm")
        files = corpus()
        sample_names = {p.name for p in samples}
        others = [p for p in files if p.name not in sample_names]
        evaluated = samples + spread(others, max(0, args.images - len(samples)))
        rest = [p for p in others if p not in evaluated]
        calibration_files = spread(rest, args.calibration_images)
        frames = frames_of(evaluated, processor)
        calibration = work / "calibration.npy"
        np.save(calibration, frames_of(calibration_files, processor))
        print(f"evaluated on {len(frames)}: {', '.join(_short(p) if p not in samples else p.name for p in evaluated)}")
        print(f"int8 calibrated on {len(calibration_files)} other corpus files")

        data_dir = work / "data"
        loads: dict[str, dict[str, float]] = {}
        # each in its own process: conversion time and peak memory of that back end alone
        for name in [] if args.skip_loads else names:
            print(f"loading {name} in a child process...", file=sys.stderr, flush=True)
            loads[name] = child_load(name, model_dir, data_dir, calibration)
            print(f"  {loads[name]}", file=sys.stderr, flush=True)

        runners = {name: make_runner(name, model_dir, data_dir, calibration) for name in names}
        vectors = {}
        # when the first round's batch-8 pass covers every evaluated image, its vectors give the cosines (no
        # separate pass: at full size on an AVX2-capped CPU each pass over 16 images takes minutes per back end)
        one_pass = args.timed_images >= len(frames)
        for name, run in [] if one_pass else runners.items():  # cosines over every image, batch 8 (eager: below)
            if name != baseline or baseline == reference:
                vectors[name] = np.concatenate([run(frames[i : i + 8]) for i in range(0, len(frames), 8)])
                print(f"  embedded {len(frames)} with {name}", file=sys.stderr, flush=True)

        per_image: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in (1, 8)}
        eager_out = None
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]  # rotate: no fixed position
            for batch, count in ((1, args.timed_single), (8, args.timed_images)):
                for name in order:
                    seconds, out = timed(runners[name], frames[:count], batch)
                    per_image[(name, batch)].append(seconds)
                    if one_pass and batch == 8 and round_no == 0:
                        vectors[name] = out
                    if name == baseline and batch == 8:
                        eager_out = out
            print(f"  round {round_no + 1}/{args.rounds} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        ref = vectors[reference]
        cosines = {name: np.sum(vectors[name] * ref, axis=1) for name in vectors}
        if baseline not in cosines and eager_out is not None:  # the eager baseline, on the images it was timed on
            cosines[baseline] = np.sum(eager_out * ref[: len(eager_out)], axis=1)
        convert = conversion_seconds(model_dir, data_dir)
    if args.json:  # the raw figures first, whatever happens to the table
        raw = {"per_image": {f"{n}@{b}": v for (n, b), v in per_image.items()}, "loads": loads, "convert": convert}
        raw["cosines"] = {n: c.tolist() for n, c in cosines.items()}
        args.json.with_suffix(".raw.json").write_text(json.dumps(raw, indent=2))

    print()
    print(f"{architecture(model_dir)}; {len(frames)} real images; {args.rounds} rounds interleaved; {info['date']}")
    print(cpu_line())
    print(f"ISA cap: {info['isa_cap'] or 'none'}; load average at the start {info['load_average']}")
    print(f"speed-up: vs {baseline} in the same round (median); cosine: vs {reference} over all images")
    head = f"| back end | batch 1 s/img | x {baseline} | batch 8 s/img | x {baseline} | min cosine | mean cosine |"
    print(head + " first load s | convert s | peak RSS GB |")
    print("|" + "---|" * 10)
    payload: dict[str, Any] = {"machine": info, "rows": []}
    for name in names:
        cells = [name]
        load = loads.get(name, {"load_seconds": float("nan"), "peak_rss_gb": float("nan")})
        row: dict[str, Any] = {"backend": name, **load}
        for batch in (1, 8):
            times = per_image[(name, batch)]
            ratios = [b / t for b, t in zip(per_image[(baseline, batch)], times, strict=True)]
            cells += [f"{statistics.median(times):.3f}", f"{statistics.median(ratios):.1f}x"]
            row[f"batch{batch}_s_per_image"] = times
            row[f"batch{batch}_speedup"] = ratios
        cells += [f"{cosines[name].min():.6f}", f"{cosines[name].mean():.6f}"]
        cells += [f"{load['load_seconds']:.1f}", convert.get(name, "-"), f"{load['peak_rss_gb']:.2f}"]
        row["cosines"] = cosines[name].tolist()
        row["runs"] = RUNS.get(name, "")
        payload["rows"].append(row)
        print("| " + " | ".join(cells) + " |")
    print()
    print("what each back end runs (read back after loading: dtype, or the compiled model's heavy kernels):")
    for name in names:
        print(f"- {name}: {RUNS.get(name, '?')}")
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
