"""Encoder calls and time per CT study: every slice (K=all) vs K sampled per volume, at full model size."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.phantoms: the suite's CT phantom writer
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ingest.py (FULL sizes), bench/machine.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; the stand-in model is built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from ingest import FULL, FULL_ARCH  # noqa: E402
from machine import cpu_line  # noqa: E402

from indexer.job import IndexOptions  # noqa: E402
from indexer.pipeline import run_index  # noqa: E402
from retrieval.collection import Collection  # noqa: E402
from retrieval.encoders.standin import build_standin_model  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from tests.phantoms import volume, write_series  # noqa: E402


def precision_run(encoder: Any) -> str:
    """The inference precision the compiled image tower reports back (OpenVINO), else what the encoder says."""
    compiled = getattr(getattr(encoder, "_image", None), "compiled", None)
    if compiled is None:
        return str(encoder.encoded_by)
    return str(compiled.get_property("INFERENCE_PRECISION_HINT"))


def count_calls(encoder: Any) -> list[int]:
    """Wrap the encoder's image entry point on this instance: [calls, images] as they happen."""
    counts = [0, 0]
    inner = encoder.encode_pixel_values

    def counted(pixel_values: Any) -> Any:
        counts[0] += 1
        counts[1] += len(pixel_values)
        return inner(pixel_values)

    encoder.encode_pixel_values = counted
    return counts


def index_once(model: Path, data_dir: Path, series: Path, k: int | None, batch: int) -> dict[str, Any]:
    """Index the phantom series into a fresh collection with K slices per volume; what the encoder did.
    Process CPU seconds (every thread of this process) stand next to wall seconds: on a shared machine the
    wall time counts other people's work, the CPU time only this run's."""
    settings = Settings(data_dir=data_dir, model=str(model), workers=1, batch_size=batch)
    with Collection(settings) as collection:
        t0 = time.perf_counter()
        encoder = collection.load_encoder()  # the conversion is cached next to the model: a warm load here
        load = time.perf_counter() - t0
        counts = count_calls(encoder)
        cpu0 = time.process_time()
        summary = run_index(collection, [series], IndexOptions(workers=1, batch_size=batch, series_slices=k))
        cpu = time.process_time() - cpu0
        return {
            "k": "all" if k is None else k,
            "encoder_calls": counts[0],
            "images_encoded": counts[1],
            "cpu_seconds": round(cpu, 2),
            "precision_run": precision_run(encoder),
            "encoded": summary.indexed,
            "skipped_by_sampling": summary.sampled_out,
            "excluded": summary.excluded,
            "encode_seconds": round(summary.stage_seconds["encode"], 2),
            "wall_seconds": round(summary.seconds, 2),
            "load_seconds": round(load, 2),
            "encoder": encoder.encoded_by,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300, help="slices of the phantom CT series")
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each slice")
    parser.add_argument("--k", type=int, default=16, help="slices sampled per volume")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--full-model", type=Path, help="reuse a full-size stand-in built in this folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--sampled-only", action="store_true", help="only the K run (the all-slices run can take an hour under load)"
    )
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="medsearch-series-encode-") as tmp:
        work = Path(tmp)
        model = args.full_model
        if model is None or not (model / "config.json").exists():
            print("building the full-size stand-in...", file=sys.stderr, flush=True)
            model = build_standin_model(args.full_model or work / "full", **FULL)
        series = work / "ct"
        write_series(series, volume("sphere", slices=args.slices, size=args.size), shape="sphere")
        warm = Settings(data_dir=work / "warm", model=str(model), workers=1)
        with Collection(warm) as collection:  # converts (or finds) the OpenVINO model once, outside the timings
            collection.load_encoder()
        runs = []  # each run's figures are printed as soon as it ends: the all-slices run may take an hour
        for k in (args.k,) if args.sampled_only else (args.k, None):
            runs.append(index_once(model, work / f"k{k}", series, k, args.batch))
            print(json.dumps(runs[-1]), flush=True)
    if args.sampled_only:
        return 0
    sampled, every = runs
    ratio = every["encode_seconds"] / sampled["encode_seconds"] if sampled["encode_seconds"] else float("inf")
    cpu_ratio = every["cpu_seconds"] / sampled["cpu_seconds"] if sampled["cpu_seconds"] else float("inf")
    figures = {
        "cpu": cpu_line(),
        "model": FULL_ARCH,
        "series": f"1 CT phantom, {args.slices} slices of {args.size}x{args.size} + a localizer",
        "runs": runs,
        "encode_time_ratio": round(ratio, 1),
        "cpu_time_ratio": round(cpu_ratio, 1),
        "encoder_calls_ratio": round(every["encoded"] / max(1, sampled["encoded"]), 1),
    }
    print("| K | slices encoded | encoder calls | skipped by sampling | left out | encode s | index wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['k']} | {run['encoded']} | {run['encoder_calls']} | {run['skipped_by_sampling']} | "
            f"{run['excluded']} | {run['encode_seconds']} | {run['wall_seconds']} | {run['cpu_seconds']} |"
        )
    calls = figures["encoder_calls_ratio"]
    print(f"precision run: {sampled['precision_run']} ({sampled['encoder']})")
    print(
        f"encode time all ÷ K={args.k}: {figures['encode_time_ratio']}x; "
        f"process CPU time {figures['cpu_time_ratio']}x; "
        f"images encoded {calls}x"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
