"""Study-level search at scale: p50 of --level study vs --level image, the three indexes' memory, maxsim vs centroid.

Synthetic vectors (bench/synthetic.py's clusters): each study is one series of `--slices` slice vectors scattered
around the study's own centre; its series and study vectors are made exactly as the store makes them
(retrieval/store/cases.py unit_mean). The queries are re-acquisitions of indexed studies (new slices around the
same centre): the study level should find the study first, and the maxsim re-ranking (retrieval/query_levels.py)
is compared with the centroid ranking over the same top candidates. The indexes are the project's FaissIndex.

    python bench/series.py --studies 100000 --slices 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.machine import cpu_line
from bench.synthetic import cluster_centres, synthetic_rows
from retrieval.index.faiss_index import FaissIndex
from retrieval.index.faiss_types import FaissOptions
from retrieval.query_levels import RERANK_DEPTH, maxsim
from retrieval.store.cases import unit_mean

SLICE_NOISE = 0.5  # a slice's distance from its study's centre, relative to a unit vector's


def slices_of(centres: npt.NDArray[np.float32], slices: int, seed: int) -> npt.NDArray[np.float32]:
    """(studies, slices, width) unit slice vectors around each study's centre."""
    rng = np.random.default_rng(seed)
    width = centres.shape[1]
    noise = rng.standard_normal((len(centres), slices, width), dtype=np.float32) * (SLICE_NOISE / np.sqrt(width))
    out = centres[:, None, :] + noise
    out /= np.linalg.norm(out, axis=2, keepdims=True)
    return out.astype(np.float32)


def build(args: argparse.Namespace, folder: Path) -> tuple[FaissIndex, FaissIndex, FaissIndex, npt.NDArray[np.float32]]:
    """The image, series and study indexes (one series per study: the series and study vectors coincide here,
    as for a single-series study) and the study centres."""
    options = FaissOptions(index_type=args.type)
    image = FaissIndex(folder / "index.faiss", args.width, options)
    series = FaissIndex(folder / "series.faiss", args.width, options)
    study = FaissIndex(folder / "study.faiss", args.width, options)
    groups = cluster_centres(args.seed, 1000, args.width)
    centres, _ = synthetic_rows(args.seed, 0, args.studies, groups)
    step = 5000
    for start in range(0, args.studies, step):
        part = centres[start : start + step]
        sl = slices_of(part, args.slices, args.seed + 1 + start)
        ids = np.arange(start * args.slices, (start + len(part)) * args.slices, dtype=np.int64) + 1
        image.add(ids, sl.reshape(-1, args.width))
        means = np.stack([unit_mean(s) for s in sl])
        case_ids = np.arange(start, start + len(part), dtype=np.int64) + 1
        series.add(case_ids, means)
        study.add(case_ids, np.stack([unit_mean(m[None, :]) for m in means]))
    return image, series, study, centres


def _memory(index: FaissIndex) -> int:
    index.save()
    return index.path.stat().st_size


def resident_bytes() -> int:
    """This process's resident memory now (VmRSS), 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_resident_bytes() -> int:
    """The process's peak resident memory so far (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        before = resident_bytes()
        image, series, study, centres = build(args, Path(tmp))
        built = time.perf_counter() - started
        after = resident_bytes()  # the three indexes plus the study centres (studies x width float32)
        rng = np.random.default_rng(args.seed + 7)
        asked = rng.choice(args.studies, size=args.queries, replace=False)
        again = slices_of(centres[asked], args.slices, args.seed + 99)  # re-acquisitions of the asked studies
        image_ms, study_ms, rerank_ms = [], [], []
        first_centroid = first_maxsim = first_image = 0
        same_order = 0
        for n, study_row in enumerate(asked):
            q_slices = again[n]
            q = unit_mean(q_slices)
            t0 = time.perf_counter()
            _, found = image.search(q_slices[len(q_slices) // 2], 10)
            image_ms.append((time.perf_counter() - t0) * 1000)
            first_image += int((int(found[0][0]) - 1) // args.slices == study_row)
            t0 = time.perf_counter()
            _, cands = study.search(q, RERANK_DEPTH)
            study_ms.append((time.perf_counter() - t0) * 1000)
            cand = [int(c) for c in cands[0] if c > 0]
            first_centroid += int(cand[0] - 1 == study_row)
            t0 = time.perf_counter()
            scored = []
            for case_id in cand:  # the candidates' slices, as the store would hand them out
                ids = np.arange((case_id - 1) * args.slices, case_id * args.slices, dtype=np.int64) + 1
                scored.append((case_id, maxsim(q_slices, image._index.reconstruct_batch(ids))))
            reranked = [c for c, _ in sorted(scored, key=lambda p: -p[1])]
            rerank_ms.append((time.perf_counter() - t0) * 1000)
            first_maxsim += int(reranked[0] - 1 == study_row)
            same_order += int(reranked[:10] == cand[:10])
        return {
            "cpu": cpu_line(),
            "studies": args.studies,
            "slices_per_study": args.slices,
            "slice_vectors": args.studies * args.slices,
            "width": args.width,
            "index_type": args.type,
            "queries": args.queries,
            "build_seconds": round(built, 1),
            "p50_ms_image_level": round(statistics.median(image_ms), 2),
            "p50_ms_study_level": round(statistics.median(study_ms), 2),
            "p50_ms_maxsim_rerank_top50": round(statistics.median(rerank_ms), 2),
            "index_bytes": {"image": _memory(image), "series": _memory(series), "study": _memory(study)},
            "resident_bytes": {
                "before_build": before,
                "after_build": after,
                "growth_in_build": after - before,
                "centres": int(centres.nbytes),
                "peak": peak_resident_bytes(),
            },
            "load_average": os.getloadavg(),
            "own_study_first": {
                "image_level_slice_query": first_image / args.queries,
                "study_level_centroid": first_centroid / args.queries,
                "study_level_maxsim": first_maxsim / args.queries,
            },
            "maxsim_top10_same_order_as_centroid": same_order / args.queries,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--type", default="flat", help="FAISS index type of the three indexes (flat: exact).")
    parser.add_argument("--seed", type=int, default=0)
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
