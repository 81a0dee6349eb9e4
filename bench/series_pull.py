"""DICOMweb bytes `medsearch pull` retrieves from a real Orthanc: every slice (K=all) vs K sampled per CT series."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.orthanc / tests.phantoms: the suite's Orthanc and phantom writers

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; the stand-in model is built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pull(orthanc_url: str, data_dir: Path, model: Path, slices: str) -> dict[str, object]:
    """One `medsearch pull --json` into a fresh collection with MEDSEARCH_SERIES_SLICES=slices; its report."""
    env = {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(data_dir),
        "MEDSEARCH_MODEL": str(model),
        "MEDSEARCH_SERIES_SLICES": slices,
        "MEDSEARCH_WORKERS": "1",
        "PYTHONPATH": str(ROOT),
    }
    medsearch = str(Path(sys.executable).parent / "medsearch")
    t0 = time.perf_counter()
    done = subprocess.run([medsearch, "pull", "--dicomweb", orthanc_url, "--json"], env=env, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode()[-3000:])
    report = dict(json.loads(done.stdout))
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    """Write CT phantom series, store them in Orthanc, pull them twice (all slices, then K), print the bytes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=2, help="phantom CT series (one study each)")
    parser.add_argument("--slices", type=int, default=300, help="slices per series")
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each slice (16-bit)")
    parser.add_argument("--k", default="16", help="slices sampled per series (MEDSEARCH_SERIES_SLICES)")
    args = parser.parse_args(argv)

    from bench.machine import cpu_line
    from retrieval.encoders.standin import build_standin_model
    from tests.orthanc import start_orthanc
    from tests.phantoms import SHAPES, volume, write_series

    with tempfile.TemporaryDirectory(prefix="series-pull-", dir="/tmp") as tmp:
        root = Path(tmp)
        model = build_standin_model(root / "tiny")
        server = start_orthanc(root / "orthanc")
        try:
            stored = 0
            for n in range(args.series):
                shape = SHAPES[n % len(SHAPES)]
                hu = volume(shape, args.slices, args.size)
                series = write_series(root / f"ct{n}", hu, shape=shape, seed=n, localizer=False)
                del hu
                for path in series.files:
                    stored += path.stat().st_size
                    server.upload(path.read_bytes())
                    path.unlink()
            rows = {k: pull(server.dicomweb, root / f"data-{k}", model, k) for k in ("all", args.k)}
        finally:
            server.stop()
    print(cpu_line())
    print(f"{args.series} CT series x {args.slices} slices of {args.size}x{args.size} (16-bit), {stored / 1e6:.1f} MB")
    print(json.dumps(rows, indent=1))
    print("\n| K | instances fetched | indexed | metadata MB | instances MB | total MB | pull s |")
    print("|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        got = r["bytes"]
        assert isinstance(got, dict)
        total = sum(int(v) for v in got.values())
        print(
            f"| {k} | {r['fetched']} | {r['indexed']} | {got['metadata'] / 1e6:.2f} | {got['instances'] / 1e6:.1f} | "
            f"{total / 1e6:.1f} | {r['wall_seconds']} |"
        )
    everything = sum(int(v) for v in rows["all"]["bytes"].values())  # type: ignore[union-attr]
    sampled = sum(int(v) for v in rows[args.k]["bytes"].values())  # type: ignore[union-attr]
    print(f"\nbytes retrieved, all / K={args.k}: {everything / max(sampled, 1):.1f}x less")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
