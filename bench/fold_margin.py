"""How many hits beyond k folding needs: the share of searches by id that would search twice, per margin, on a
collection where 10 % of the rows are an exact copy of another (the shape of the 1M figures in issue 22, where
375 of 600 queries searched twice).

    python bench/fold_margin.py DATA_DIR     # a data folder with an ivf-sq8 index saved with its float vectors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np
from machine import cpu_line

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rows", type=int, default=90_000, help="distinct rows taken; 1/9 of them copied once")
    parser.add_argument("--queries", type=int, default=600)
    args = parser.parse_args()
    print(cpu_line())
    records = np.load(args.data_dir / "index.faiss.vectors.npy", mmap_mode="r")
    base = np.ascontiguousarray(records["vector"][: args.rows])
    vecs = np.concatenate([base, base[: args.rows // 9]])
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    pivots = np.random.default_rng(0).choice(len(vecs), args.queries, replace=False)
    _, found = index.search(vecs[pivots], 3 * K + 1)
    keys = [row.tobytes() for row in vecs]

    def distinct(row: np.ndarray, pivot: int, n: int) -> int:
        seen = {keys[i] for i in row[:n] if i != pivot}
        return len(seen)

    for margin in (0, 2, 4, 8, K, 2 * K):
        short = sum(distinct(found[q], int(pivots[q]), K + 1 + margin) < K for q in range(len(pivots)))
        print(f"margin {margin:2d}: {short}/{len(pivots)} searches by id would search twice")


if __name__ == "__main__":
    main()
