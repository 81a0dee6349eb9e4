"""Ingest benchmark: per-stage throughput and encoder-busy fraction, tiny vs full-size MedSigLIP vision tower."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; models are built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PYTHONWARNINGS", "ignore")  # spawned decode workers read this at start-up

import numpy as np
from machine import cpu_facts, cpu_line

from indexer.pipeline import STAGES, IndexOptions, IndexSummary, run_index
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.imaging.decode import decode_bytes
from retrieval.settings import Settings

# MedSigLIP-448 vision tower (SigLIP so400m): hidden 1152, 27 layers, 16 heads, MLP 4304, patch 14, image 448.
FULL = {"width": 1152, "layers": 27, "heads": 16, "intermediate": 4304}
TINY: dict[str, int] = {}  # build_standin_model defaults: width 32, 2 layers, 2 heads, MLP 64 (the test model)
TINY_ARCH = "tiny random SigLIP: width 32, 2 layers, 2 heads, MLP 64, patch 14, 448 px"
FULL_ARCH = "so400m random SigLIP: width 1152, 27 layers, 16 heads, MLP 4304, patch 14, 448 px"
REPORTED = ("read", "decode", "preprocess", "encode", "write")
DEVICE = ["auto"]  # --device, for every run (auto: CUDA when present; the CUDA path is untested here)


@dataclass
class RunResult:
    """One timed indexing run of a fixed file list with one model."""

    label: str
    model: str
    encoded_by: str
    images: int
    workers: int
    batch_size: int
    load_seconds: float
    warmup_seconds: float
    wall_seconds: float
    stage_seconds: dict[str, float]
    images_per_second: dict[str, float]
    encoder_busy: float
    failed: int
    duplicates: int
    load_average: tuple[float, float]  # 1-minute load average before and after (others may share the machine)
    files: list[str] = field(default_factory=list)
    repeats: int = 1
    wall_seconds_runs: list[float] = field(default_factory=list)
    encode_seconds_runs: list[float] = field(default_factory=list)


class _Ticker:
    """Prints a line per written batch so a long full-size run shows it is alive."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.total = 0
        self.done = 0
        self.start_time = time.perf_counter()

    def start(self, total: int) -> None:
        self.total = total
        self.start_time = time.perf_counter()

    def advance(self, sources: int, images: int) -> None:
        self.done += sources
        elapsed = time.perf_counter() - self.start_time
        print(f"  [{self.label}] {self.done}/{self.total} files, {elapsed:.1f} s", file=sys.stderr, flush=True)

    def finish(self) -> None:
        pass


def pydicom_roots() -> list[Path]:
    """Folders of real test DICOMs shipped by pydicom and pydicom-data (same as tests/conftest.py)."""
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        print("pydicom-data is not installed: using pydicom's own test files only", file=sys.stderr)
    return roots


def corpus() -> list[Path]:
    """Every file of the corpora that decodes, one per instance key (middle frame), in a stable order."""
    seen: set[str] = set()
    out: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for root in pydicom_roots():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                try:
                    decoded = decode_bytes(path.read_bytes(), frames="middle")
                except Exception:  # not an image, or a deliberately broken test file
                    continue
                key = decoded.instance_key(decoded.frames[0].frame)
                if key not in seen:  # the same SOP instance in several transfer syntaxes counts once
                    seen.add(key)
                    out.append(path)
    return out


def _short(path: Path) -> str:
    """A corpus file named from its corpus folder on (test_files/... or data/...)."""
    for root in pydicom_roots():
        if path.is_relative_to(root):
            return f"{root.name}/{path.relative_to(root)}"
    return str(path)


def spread(files: list[Path], count: int) -> list[Path]:
    """`count` files evenly spaced over the ordered list (all of them if count >= len)."""
    if count >= len(files):
        return list(files)
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def run_one(
    label: str,
    arch: str,
    model_dir: Path,
    files: list[Path],
    workers: int,
    batch_size: int,
    work: Path,
    backend: str = "torch",
) -> RunResult:
    """Index `files` into a fresh collection; model load and one warm-up forward are outside the timing."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    settings = Settings(
        data_dir=data_dir,
        model=str(model_dir),
        workers=workers,
        batch_size=batch_size,
        device=DEVICE[0],
        encoder_backend=backend,  # type: ignore[arg-type]
    )
    collection = Collection(settings)
    load_before = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        encoder = collection.load_encoder()  # loads the model (OpenVINO: converts once) and records its fingerprint
        load_seconds = time.perf_counter() - t0
        encoded_by = encoder.encoded_by
        t0 = time.perf_counter()
        encoder.encode_pixel_values(np.zeros((1, 3, 448, 448), dtype=np.float32))
        warmup_seconds = time.perf_counter() - t0
        options = IndexOptions(frames="middle", workers=workers, batch_size=batch_size)
        summary: IndexSummary = run_index(collection, files, options, progress=_Ticker(label))
    finally:
        collection.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    rates = summary.images_per_second()
    return RunResult(
        label=label,
        model=arch,
        encoded_by=encoded_by,
        images=summary.indexed,
        workers=workers,
        batch_size=batch_size,
        load_seconds=load_seconds,
        warmup_seconds=warmup_seconds,
        wall_seconds=summary.seconds,
        stage_seconds={s: summary.stage_seconds[s] for s in STAGES},
        images_per_second={k: rates[k] for k in (*STAGES, "overall")},
        encoder_busy=summary.encoder_busy,
        failed=summary.failed,
        duplicates=summary.duplicates,
        load_average=(load_before, os.getloadavg()[0]),
        files=[str(f) for f in files],
    )


def repeated(
    times: int,
    label: str,
    arch: str,
    model_dir: Path,
    files: list[Path],
    workers: int,
    batch_size: int,
    work: Path,
    backend: str = "torch",
) -> RunResult:
    """Run `times` times; every figure is the median over the runs (rates recomputed from median seconds)."""
    results = [run_one(label, arch, model_dir, files, workers, batch_size, work, backend) for _ in range(max(1, times))]
    first = results[0]
    if len(results) == 1:
        first.wall_seconds_runs = [first.wall_seconds]
        first.encode_seconds_runs = [first.stage_seconds["encode"]]
        return first
    wall = statistics.median(r.wall_seconds for r in results)
    stages = {s: statistics.median(r.stage_seconds[s] for r in results) for s in STAGES}
    rates = {s: (first.images / t if t > 0 else 0.0) for s, t in stages.items()}
    rates["overall"] = first.images / wall if wall > 0 else 0.0
    return RunResult(
        label=label,
        model=arch,
        encoded_by=first.encoded_by,
        images=first.images,
        workers=workers,
        batch_size=batch_size,
        load_seconds=statistics.median(r.load_seconds for r in results),
        warmup_seconds=statistics.median(r.warmup_seconds for r in results),
        wall_seconds=wall,
        stage_seconds=stages,
        images_per_second=rates,
        encoder_busy=statistics.median(r.encoder_busy for r in results),
        failed=max(r.failed for r in results),
        duplicates=max(r.duplicates for r in results),
        load_average=(results[0].load_average[0], results[-1].load_average[1]),
        files=first.files,
        repeats=len(results),
        wall_seconds_runs=[r.wall_seconds for r in results],
        encode_seconds_runs=[r.stage_seconds["encode"] for r in results],
    )


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"


def markdown(runs: list[RunResult]) -> str:
    """The figures as Markdown tables: one row per run, then the full/tiny ratios on the same files."""
    head = ["run", "encoder", "workers", "images", "wall s", "overall img/s", *(f"{s} img/s" for s in REPORTED)]
    head += ["encode s/img", "encoder busy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        ips = r.images_per_second
        per_image = r.stage_seconds["encode"] / r.images if r.images else 0.0
        cells = [r.label, r.encoded_by, str(r.workers), str(r.images), f"{r.wall_seconds:.2f}", _rate(ips["overall"])]
        cells += [*(_rate(ips[s]) for s in REPORTED), f"{per_image:.4f}", f"{r.encoder_busy:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    by_label = {r.label: r for r in runs}
    full, tiny = by_label.get("full-subset"), by_label.get("tiny-subset")
    if full and tiny:
        lines += ["", "| same files, same workers: full-size ÷ tiny | ratio |", "|---|---|"]
        for stage in ("overall", *REPORTED):
            f_ips, t_ips = full.images_per_second[stage], tiny.images_per_second[stage]
            lines.append(f"| {stage} img/s | {f_ips / t_ips:.4f} |" if t_ips else f"| {stage} img/s | n/a |")
        lines.append(f"| wall seconds | {full.wall_seconds / tiny.wall_seconds:.1f} |")
        busy = f"{full.encoder_busy / tiny.encoder_busy:.1f}" if tiny.encoder_busy else "n/a"
        lines.append(f"| encoder busy ({full.encoder_busy:.1%} vs {tiny.encoder_busy:.1%}) | {busy} |")
        encode_x = tiny.images_per_second["encode"] / full.images_per_second["encode"]
        lines.append(f"| tiny encode throughput ÷ full-size encode throughput | {encode_x:,.0f} |")
    for other in (r for r in runs if r.label.startswith("full-subset-") and full is not None):
        assert full is not None
        lines += ["", f"| same files, same workers: {other.encoded_by} ÷ {full.encoded_by} | ratio |", "|---|---|"]
        for stage in ("overall", "encode"):
            base = full.images_per_second[stage]
            lines.append(f"| {stage} img/s | {other.images_per_second[stage] / base:.2f} |" if base else "| n/a |")
        lines.append(f"| encoder busy | {other.encoder_busy:.1%} vs {full.encoder_busy:.1%} |")
    inline = by_label.get("tiny-subset-inline")
    if tiny and inline:
        overhead = tiny.wall_seconds - inline.wall_seconds
        lines += [
            "",
            f"Decode worker processes (workers={tiny.workers}) vs inline decode (workers=0), tiny model, same files: "
            f"wall {tiny.wall_seconds:.2f} s vs {inline.wall_seconds:.2f} s "
            f"(×{tiny.wall_seconds / inline.wall_seconds:.1f}; {overhead:.1f} s more).",
        ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch
    import transformers

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **cpu_facts(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    """Build the models, run the same files through both, print Markdown tables (and JSON if asked)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=24, help="files in the subset run by both models (default 24)")
    parser.add_argument("--workers", type=int, default=2, help="decode worker processes (product default: 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="encoder batch size (product default: 16)")
    parser.add_argument("--skip-full", action="store_true", help="tiny model only (seconds instead of minutes)")
    parser.add_argument("--skip-corpus", action="store_true", help="skip the tiny-model run over every file")
    parser.add_argument("--skip-inline", action="store_true", help="skip the tiny-model run with workers=0")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per tiny-model row, medians reported (full-size runs once)"
    )
    parser.add_argument("--full-model", type=Path, help="reuse a full-size stand-in already built in this folder")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--backends",
        default="torch",
        help="encoder back ends for the full-size run, side by side (e.g. torch,openvino); tiny runs use the first",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="MEDSEARCH_DEVICE")
    args = parser.parse_args(argv)
    DEVICE[0] = args.device
    backends = [b for b in args.backends.split(",") if b]

    info = machine()
    info["command"] = " ".join(["python", "bench/ingest.py", *(argv if argv is not None else sys.argv[1:])])
    print(cpu_line(), flush=True)
    print(f"machine: {info}", file=sys.stderr)
    t0 = time.perf_counter()
    files = corpus()
    subset = spread(files, args.images)
    print(f"corpus: {len(files)} decodable files with distinct instance keys ({time.perf_counter() - t0:.1f} s)")
    print(f"subset: {len(subset)} of them, evenly spaced: {', '.join(_short(p) for p in subset)}")

    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="medsearch-bench-") as tmp:
        work = Path(tmp)

        def measure(
            label: str, arch: str, model_dir: Path, paths: list[Path], workers: int, times: int, backend: str
        ) -> None:
            runs.append(repeated(times, label, arch, model_dir, paths, workers, args.batch_size, work, backend))

        tiny_dir = build_standin_model(work / "tiny", **TINY)
        measure("tiny-subset", TINY_ARCH, tiny_dir, subset, args.workers, args.repeats, backends[0])
        if args.workers > 0 and not args.skip_inline:
            measure("tiny-subset-inline", TINY_ARCH, tiny_dir, subset, 0, args.repeats, backends[0])
        if not args.skip_full:
            full_dir = args.full_model
            if full_dir is None:
                t0 = time.perf_counter()
                print("building the full-size stand-in (about 1.6 GB)...", file=sys.stderr, flush=True)
                full_dir = build_standin_model(work / "full", **FULL)
                print(f"  built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for i, backend in enumerate(backends):  # the first is the reference row ("full-subset")
                label = "full-subset" if i == 0 else f"full-subset-{backend}"
                measure(label, FULL_ARCH, full_dir, subset, args.workers, 1, backend)
            if args.full_model is None:
                shutil.rmtree(full_dir, ignore_errors=True)
        if not args.skip_corpus and len(files) > len(subset):
            measure("tiny-corpus", TINY_ARCH, tiny_dir, files, args.workers, args.repeats, backends[0])

    for r in runs:
        print(
            f"{r.label}: model load {r.load_seconds:.2f} s, warm-up forward {r.warmup_seconds:.2f} s (not in wall); "
            f"failed {r.failed}, duplicates {r.duplicates}; "
            f"1-min load average {r.load_average[0]:.2f} before, {r.load_average[1]:.2f} after"
        )
        if r.repeats > 1:
            walls = ", ".join(f"{w:.2f}" for w in r.wall_seconds_runs)
            encodes = ", ".join(f"{r.images / e:.1f}" if e > 0 else "n/a" for e in r.encode_seconds_runs)
            print(f"  {r.repeats} runs (medians in the table): wall s {walls}; encode img/s {encodes}")
    print()
    print(cpu_line())
    print(markdown(runs))
    if args.json:
        payload = {
            "machine": info,
            "args": {k: str(v) for k, v in vars(args).items()},
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
