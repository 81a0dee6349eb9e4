"""`pull --ray` driver memory: peak RSS of the driver process for N fetched instances (a fake DICOMweb source)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; models are built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PYTHONWARNINGS", "ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/machine.py
from machine import cpu_line  # type: ignore[import-not-found]

FAKE_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "fake_dicomweb.py"  # by path: also to measure
# another checkout's code (PYTHONPATH=/work/main python bench/ray_pull_memory.py) with this fake source


def child(count: int, model: Path, batch_size: int, decoders: int, work: Path, junk: bool) -> dict[str, object]:
    """One `run_source_ray` over `count` instances in this process, on a local Ray instance it starts itself."""
    from indexer.pipeline import IndexOptions
    from indexer.ray_ingest import RayOptions, run_source_ray
    from retrieval.collection import Collection
    from retrieval.settings import Settings
    from tests.conftest import testdata_file

    spec = importlib.util.spec_from_file_location("fake_dicomweb", FAKE_SOURCE)
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    source = fake.FakeDicomweb(testdata_file("CT_small.dcm"), count, junk)
    settings = Settings(data_dir=work / "data", model=str(model), workers=0, batch_size=batch_size, device="cpu")
    collection = Collection(settings)
    try:
        collection.load_encoder()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        options = IndexOptions(batch_size=batch_size)
        summary = run_source_ray(collection, source, options, RayOptions(actors=2, decoders=decoders), source)
    finally:
        collection.close()
    return {
        "instances": count,
        "indexed": summary.indexed,
        "failed": summary.failed,
        "bytes_fetched": count * len(source._instance(0)),
        "most_fetched_ahead_of_writes": source.most_ahead,
        "peak_rss_mb_before_run": round(before / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(summary.seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Each count in a fresh driver process (peak RSS only grows), one JSON line each, then a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1000,10000", help="instance counts, one driver process each")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decoders", type=int, default=2, help="--ray-decoders (2 decode tasks in flight each)")
    parser.add_argument("--junk", action="store_true", help="same-size bytes that are no image (cheap: no encoding)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.model, args.batch_size, args.decoders, args.work, args.junk)))
        return 0
    from retrieval.encoders.standin import build_standin_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-mem-", dir="/tmp") as tmp:
        model = build_standin_model(Path(tmp) / "tiny")
        for count in (int(c) for c in args.counts.split(",")):
            work = Path(tempfile.mkdtemp(prefix="r", dir=tmp))
            env = {**os.environ, "RAY_TMPDIR": str(work), "HOME": str(work)}
            command = [sys.executable, __file__, "--child", str(count), "--model", str(model), "--work", str(work)]
            command += ["--batch-size", str(args.batch_size), "--decoders", str(args.decoders)]
            command += ["--junk"] if args.junk else []
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(cpu_line())
    print(f"load average: {os.getloadavg()}")
    print("| instances | MB fetched | fetched ahead of writes (max) | driver peak RSS MB (before run) | run s |")
    print("|---|---|---|---|---|")
    for r in rows:
        mb = int(r["bytes_fetched"]) / 1e6
        print(
            f"| {r['instances']} | {mb:.0f} | {r['most_fetched_ahead_of_writes']} | "
            f"{r['peak_rss_mb']} ({r['peak_rss_mb_before_run']}) | {r['seconds']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
