"""FAISS OpenMP threads per search, measured: 1 and 4 client threads searching one index, OpenMP at 1 thread
per search vs FAISS's default (all cores), in alternating rounds, exact (flat) and ivf-sq8 indexes.

    python bench/thread_policy.py --size 100000 --seconds 4 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import faiss
import numpy as np
from machine import cpu_line

WIDTH = 1152


def build(kind: str, vectors: np.ndarray) -> faiss.Index:
    """A flat or ivf-sq8 index over the vectors (ids 0..n-1)."""
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(WIDTH))
    else:
        nlist = int(np.sqrt(len(vectors)))
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(WIDTH), WIDTH, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.train(vectors[: max(64 * nlist, 20_000)])
        index.nprobe = max(8, nlist // 64)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return index


def loop(index: faiss.Index, queries: np.ndarray, clients: int, omp: int, seconds: float) -> tuple[float, float]:
    """p50 ms and searches/s of `clients` threads searching one query at a time, each thread at `omp` threads
    (0: FAISS's default, i.e. what a fresh thread gets)."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        if omp:
            faiss.omp_set_num_threads(omp)  # OpenMP keeps this per thread
        i = seed
        mine = []
        while time.perf_counter() < deadline:
            q = queries[i % len(queries)][None]
            t0 = time.perf_counter()
            index.search(q, 10)
            mine.append(time.perf_counter() - t0)
            i += clients
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return 1000 * float(np.percentile(latencies, 50)), len(latencies) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, WIDTH)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, args.size)] + 0.6 * rng.standard_normal((args.size, WIDTH)).astype(
        np.float32
    ) / np.sqrt(WIDTH)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, args.size, 500)] + 0.01
    print(f"{cpu_line()}, default OpenMP threads {faiss.omp_get_max_threads()}, load {os.getloadavg()}")
    print("| index | clients | OpenMP threads per search | p50 ms | searches/s |")
    print("|---|---:|---|---:|---:|")
    for kind in ("flat", "ivf-sq8"):
        index = build(kind, vectors)
        results: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            for clients in (1, 4):
                for omp in (0, 1) if r % 2 == 0 else (1, 0):
                    results.setdefault((clients, omp), []).append(loop(index, queries, clients, omp, args.seconds))
        for (clients, omp), parts in sorted(results.items()):
            p50 = float(np.median([p for p, _ in parts]))
            rate = float(np.median([q for _, q in parts]))
            label = "1" if omp else f"default ({faiss.omp_get_max_threads()})"
            print(f"| {kind} {args.size:,} | {clients} | {label} | {p50:.2f} | {rate:.1f} |", flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
