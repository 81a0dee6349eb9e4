"""SR export latency to a local Orthanc by C-STORE and STOW-RS (10 matches), and ROI vs whole-image query latency.

Run from the repository root (Orthanc + its DICOMweb plugin installed; a private network namespace is best):
    sh tests/isolated.sh python bench/export_sr.py [--runs 30] [--model DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_line

FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "emri_small.dcm",
    "liver_1frame.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_small_odd.dcm",
    "MR_small_implicit.dcm",
    "SC_rgb_rle_2frame.dcm",
    "MR_small_jp2klossless.dcm",
]
ROI = (16, 16, 64, 48)  # of CT_small's 128 x 128
LARGE = "RG1_J2KI.dcm"  # data/samples: a 1841 x 1955 chest radiograph (JPEG 2000), the region a quarter of it
LARGE_ROI = (460, 490, 921, 681)  # the box of docs/region-query.png


def p50(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and max wall time of `runs` calls, in milliseconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--model", type=Path, help="model folder (default: a stand-in built here)")
    args = parser.parse_args()

    from pydicom.uid import generate_uid

    from indexer.pipeline import IndexOptions, run_index
    from retrieval import query as engine
    from retrieval.collection import Collection
    from retrieval.export.run import export_sr, header_of
    from retrieval.settings import Settings
    from tests.conftest import SAMPLES, testdata_file
    from tests.orthanc import encode, start_orthanc, with_new_uids

    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    model = args.model
    if model is None:
        from retrieval.encoders.standin import build_standin_model

        model = build_standin_model(root / "model")
    orthanc = start_orthanc(root / "orthanc", modalities={"medsearch": ("MEDSEARCH", 1)})
    try:
        folder = root / "images"
        folder.mkdir()
        for name in FILES:
            data = encode(with_new_uids(testdata_file(name), study=generate_uid()))
            (folder / name).write_bytes(data)
            orthanc.upload(data)
        settings = Settings(
            data_dir=root / "data",
            model=str(model),
            workers=0,
            embed_cache_size=0,  # every query decodes, preprocesses and runs the model
            reuse_indexed_vectors=False,
            export_ae=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
            export_dicomweb=orthanc.dicomweb,
        )
        collection = Collection(settings)
        try:
            run_index(collection, [folder], IndexOptions())
            query = (folder / "CT_small.dcm").read_bytes()
            header = header_of(query)
            hits = engine.search(collection, engine.embed_image(collection, query), k=10, show_duplicates=True)
            assert len(hits) == 10, len(hits)
            results = {}
            for route in ("cstore", "stow"):
                results[f"export_{route}_ms"] = p50(
                    lambda route=route: export_sr(collection, header, hits, "image", via=route), args.runs
                )

            def whole() -> object:
                return engine.search(collection, engine.embed_image(collection, query), k=10)

            def region() -> object:
                return engine.search(collection, engine.embed_image(collection, query, roi=ROI), k=10)

            large = (SAMPLES / LARGE).read_bytes()

            def whole_large() -> object:
                return engine.search(collection, engine.embed_image(collection, large), k=10)

            def region_large() -> object:
                return engine.search(collection, engine.embed_image(collection, large, roi=LARGE_ROI), k=10)

            for _ in range(2):  # interleaved, twice: the same run, the same load
                results["query_whole_ms"] = p50(whole, args.runs)
                results["query_roi_ms"] = p50(region, args.runs)
                results["query_whole_large_ms"] = p50(whole_large, args.runs)
                results["query_roi_large_ms"] = p50(region_large, args.runs)
            stored = len(orthanc.client().get("/instances").json())
        finally:
            collection.close()
    finally:
        orthanc.stop()
    report = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_line(),
        "load_average": os.getloadavg(),
        "runs": args.runs,
        "matches": 10,
        "model": "stand-in" if args.model is None else str(args.model),
        "orthanc_instances_after": stored,
        **{k: {"p50": round(v[0], 1), "max": round(v[1], 1)} for k, v in results.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
