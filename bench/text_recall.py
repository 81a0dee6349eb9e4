"""Recall@10 of the default (quantised) index against exact search, for image-like and text-like queries, with the
unfiltered re-rank's refine factor and the lists visited (nprobe) varied: the codes propose k x R, the float vectors
rank (issue 22 item 4). Each nprobe row also times the FAISS search of one query (this thread's CPU time, one
OpenMP thread), the cost of visiting more lists.

Text queries are synthetic, modelled on SigLIP's text-image geometry: a caption's cosine with its matching images
is small (~0.1-0.2) and close to its cosine with unrelated ones (~0 +- 0.03 at width 1152), so the top-10 sit
within a few hundredths of each other. Each text vector is unit(a * v + sqrt(1 - a^2) * r), v a stored image's
vector and r a random unit vector: its cosine with v is ~a, with v's neighbours ~a x their cosine with v, with
the rest ~a x (their cosine with v) + N(0, 1/sqrt(width)). Image queries are stored vectors plus small noise.

    python bench/text_recall.py DATA_DIR --alpha 0.2 --queries 200 --nprobe 15,32,64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from machine import cpu_line

K = 10
CHUNK = 65_536  # stored vectors scored per step of the exact search (a 1M collection's 4.6 GB stays mapped)


def exact_top(
    queries: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], vectors: Any
) -> tuple[list[set[int]], npt.NDArray[np.float32]]:
    """The exact top-K ids per query over every stored vector, a chunk at a time (no duplicate vectors in the
    benchmark collections, so no ties to break), and their scores best first."""
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), K), np.int64)
    for start in range(0, len(ids), CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + CHUNK], np.float32)
        scores = np.concatenate([best_scores, queries @ chunk.T], axis=1)
        both = np.concatenate([best_ids, np.broadcast_to(ids[start : start + CHUNK], (len(queries), len(chunk)))], 1)
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(both, top, 1)
    return [set(row.tolist()) for row in best_ids], -np.sort(-best_scores, axis=1)


def synthetic_queries(
    vectors: Any, count: int, alpha: float, rng: np.random.Generator
) -> dict[str, npt.NDArray[np.float32]]:
    """Unit query vectors from `count` stored vectors picked at random, as modelled above: "text" (cosine ~alpha
    with its image) and "image" (its image plus small noise), both from the same picks and noise."""
    picks = np.sort(rng.choice(len(vectors), size=count, replace=False))
    picked = np.asarray(vectors[picks], np.float32)
    noise = rng.standard_normal(picked.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    raw = {"text": alpha * picked + np.sqrt(1 - alpha * alpha) * noise, "image": picked + 0.3 * noise}
    return {kind: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for kind, v in raw.items()}


def cosine_spread(
    queries: npt.NDArray[np.float32], top: npt.NDArray[np.float32], vectors: Any, sample: npt.NDArray[np.int64]
) -> list[float]:
    """Median over queries of the top-1 and top-10 cosine, and of the median cosine (over a sample of vectors)."""
    exact = queries @ np.ascontiguousarray(vectors[np.sort(sample)], np.float32).T
    return [
        round(float(np.median(top[:, 0])), 3),
        round(float(np.median(top[:, K - 1])), 3),
        round(float(np.median(np.median(exact, axis=1))), 3),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="a data folder whose index is ivf-sq8 (saved with its vectors)")
    parser.add_argument("--alpha", type=float, default=0.2, help="text vectors' cosine with their image")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", default="", help="lists visited, comma-separated (default: the saved index's)")
    parser.add_argument("--refine", default="1,2,4,8,16", help="refine factors R, comma-separated")
    parser.add_argument("--seed", type=int, default=3, help="of the picked images and the text vectors' noise")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(cpu_line())
    faiss.omp_set_num_threads(1)  # the product searches on one thread (MEDSEARCH_SEARCH_THREADS)
    index: Any = faiss.read_index(str(args.data_dir / "index.faiss"))
    records = np.load(args.data_dir / "index.faiss.vectors.npy", mmap_mode="r")
    ids = np.array(records["id"], np.int64)
    vectors = records["vector"]  # mapped: read a chunk at a time
    saved_nprobe = int(index.nprobe)
    probes = [int(x) for x in args.nprobe.split(",") if x.strip()] or [saved_nprobe]
    refines = [int(x) for x in args.refine.split(",") if x.strip()]
    rng = np.random.default_rng(args.seed)
    kinds = synthetic_queries(vectors, args.queries, args.alpha, rng)
    out: dict[str, Any] = {
        "cpu": cpu_line(),
        "vectors": len(ids),
        "nlist": int(index.nlist),
        "saved nprobe": saved_nprobe,
        "alpha": args.alpha,
    }
    sample = rng.choice(len(ids), size=min(len(ids), 100_000), replace=False)
    for kind, queries in kinds.items():
        truth, top = exact_top(queries, ids, vectors)
        out[f"{kind} cosine top1 / top10 / median"] = cosine_spread(queries, top, vectors, sample)
        for nprobe in probes:
            index.nprobe = nprobe
            for refine in refines:
                c0 = time.thread_time()
                _, proposed = index.search(queries, K * refine)
                cpu_ms = 1000 * (time.thread_time() - c0) / len(queries)
                recalls = []
                for q, found, want in zip(queries, proposed, truth, strict=True):
                    found = np.sort(found[found >= 0])
                    rows = np.searchsorted(ids, found)
                    scores = np.asarray(vectors[rows], np.float32) @ q
                    best = found[np.argsort(-scores, kind="stable")[:K]]
                    recalls.append(len(want & set(best.tolist())) / K)
                out[f"{kind} recall@10 nprobe {nprobe} refine {refine}"] = round(float(np.mean(recalls)), 4)
                out[f"{kind} faiss cpu ms nprobe {nprobe} refine {refine}"] = round(cpu_ms, 3)
                print(
                    f"{kind:5s} nprobe {nprobe:4d} refine x{refine:<2d}: recall@10 {np.mean(recalls):.4f} "
                    f"(min {np.min(recalls):.1f}), FAISS {cpu_ms:.2f} ms CPU per query",
                    flush=True,
                )
        cosines = out[f"{kind} cosine top1 / top10 / median"]
        print(f"{kind:5s} cosines (median over queries) top1/top10/median (of {len(sample):,} sampled): {cosines}")
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
