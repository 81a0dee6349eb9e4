"""Ray ingest benchmark: run_index vs `--ray` (2 encoder actors) on the same files, plus Ray's fixed start-up cost."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; models are built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import FULL, FULL_ARCH, TINY, TINY_ARCH, corpus, spread  # the same 24 files as bench/ingest.py
from machine import cpu_facts, cpu_line

from indexer.pipeline import IndexOptions, IndexSummary, run_index
from indexer.ray_ingest import RayIndexSummary, RayOptions, run_index_ray
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.settings import Settings


def one_run(label: str, model: Path, files: list[Path], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Index the files into a fresh collection, single-process or on the running Ray instance."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    settings = Settings(data_dir=data_dir, model=str(model), workers=2, batch_size=args.batch_size, device=args.device)
    if label == "ray":  # the driver only checks the fingerprint, on the CPU; the actors get the device
        settings = settings.model_copy(update={"device": "cpu"})
    collection = Collection(settings)
    try:
        collection.load_encoder()  # model load outside the clock in both rows (each actor loads its own inside)
        options = IndexOptions(frames="middle", workers=2, batch_size=args.batch_size)
        summary: IndexSummary
        if label == "ray":
            shape = RayOptions(actors=args.actors, decoders=1, device=args.device)
            summary = run_index_ray(collection, files, options, shape)
        else:
            summary = run_index(collection, files, options)
    finally:
        collection.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    row: dict[str, Any] = {
        "run": label,
        "images": summary.indexed,
        "failed": summary.failed,
        "wall_seconds": round(summary.seconds, 2),
        "encode_seconds": round(summary.stage_seconds["encode"], 2),
        "decode_preprocess_seconds": round(summary.stage_seconds["decode"] + summary.stage_seconds["preprocess"], 2),
    }
    if isinstance(summary, RayIndexSummary):
        running = summary.seconds - summary.startup_seconds
        row.update(
            first_batch_seconds=round(summary.startup_seconds, 2),
            after_first_batch_seconds=round(running, 2),
            actors={k: {"images": v.images, "seconds": round(v.seconds, 2)} for k, v in summary.actors.items()},
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=24, help="files (evenly spread over the corpus; default 24)")
    parser.add_argument("--batch-size", type=int, default=4, help="encoder batch size (default 4)")
    parser.add_argument("--actors", type=int, default=2, help="Ray encoder actors (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (actors ask Ray for one GPU each on cuda)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of the full-size one")
    parser.add_argument("--full-model", type=Path, help="reuse a full-size stand-in already built in this folder")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)

    import ray

    work = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    os.environ["RAY_TMPDIR"] = str(work)
    try:
        files = spread(corpus(), args.images)
        arch = TINY_ARCH if args.tiny else FULL_ARCH
        model = args.full_model if args.full_model and not args.tiny else None
        if model is None:
            print(f"building {arch} ...", file=sys.stderr, flush=True)
            model = build_standin_model(work / "model", **(TINY if args.tiny else FULL))
        t0 = time.perf_counter()
        ray.init(num_cpus=max(os.cpu_count() or 1, args.actors + 1), include_dashboard=False, log_to_driver=False)
        init_seconds = time.perf_counter() - t0
        rows = []
        for label in ("single", "ray"):
            print(f"running {label} ...", file=sys.stderr, flush=True)
            rows.append(one_run(label, model, files, args, work))
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    single, on_ray = rows
    n = max(1, single["images"])
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        **cpu_facts(),
        "load_average": os.getloadavg()[0],
        "model": arch,
        "device": args.device,
        "files": len(files),
        "ray_init_seconds": round(init_seconds, 2),
        "rows": rows,
        "per_image_seconds": {
            "single": round(single["wall_seconds"] / n, 3),
            "ray_whole_run": round(on_ray["wall_seconds"] / n, 3),
            "ray_after_first_batch": round(on_ray["after_first_batch_seconds"] / n, 3),
        },
        "ray_wall_over_single": round(on_ray["wall_seconds"] / max(single["wall_seconds"], 1e-9), 3),
        # wall time not spent computing by the busiest encoder actor: actor pools, model loads, scheduling
        "ray_overhead_seconds": round(on_ray["wall_seconds"] - max(a["seconds"] for a in on_ray["actors"].values()), 2),
    }
    report["ray_overhead_per_image_seconds"] = round(report["ray_overhead_seconds"] / n, 3)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
