"""How far the library's search by id sits above the work it cannot skip (issue 22 goal 1), in one process.

Three searches per pivot, their order rotated from pivot to pivot, each timed with the thread's CPU clock:

- **library**: `embed_id` + `search_page` (k=10, folding on), what `bench/search_floor.py` times;
- **necessary steps**: the same search written as straight-line code on the same objects, with nothing the
  result can do without left out and nothing else done: the pivot's float vector from the in-memory set, the FAISS
  proposals (2 x 11, as the library asks), their float vectors gathered and scored exactly, the best 21 ranked, the
  Gram matrix folding needs, and the 10 hits' rows with the two flags (one SQLite statement on the library's connection,
  every column). No locks, leases, hit objects or row objects;
- **bare FAISS**: the index's own search for 11, the goal's denominator.

The necessary steps' ratio to FAISS is the floor the goal can be measured against on this machine: the library
cannot go below it without dropping one of those steps (the exact re-rank, folding, or reading the rows).

    python bench/by_id_floor.py DATA_DIR MODEL_DIR --queries 1500
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_line

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    import faiss

    from retrieval import query as engine
    from retrieval.collection import Collection
    from retrieval.duplicates import fold
    from retrieval.index.faiss_index import REFINE_FACTOR
    from retrieval.settings import Settings
    from retrieval.store.reads import _ANY_FINDINGS, _ANY_REPORTS, _IMAGE_SELECT

    print(cpu_line(), flush=True)
    faiss.omp_set_num_threads(1)
    collection = Collection(Settings(data_dir=args.data_dir, model=str(args.model_dir)))
    index: Any = collection.index
    raw, exact = index._index, index._exact  # the bare FAISS index; the in-memory float vectors
    assert exact is not None and exact._position is not None, "needs a lossy index with its float vectors in memory"
    params = faiss.SearchParametersIVF()
    params.nprobe = index.params.nprobe
    db = collection.catalog.reads._own_connection()  # the SQLite connection the library's reads use (its pragmas)
    rows_sql = f"SELECT {_IMAGE_SELECT}, {_ANY_FINDINGS}, {_ANY_REPORTS} FROM images i WHERE i.id IN ({'?,' * 9}?)"
    position, base = exact._position, exact._base
    threshold = collection.settings.duplicate_threshold

    def necessary(pivot: int) -> list[Any]:
        query = np.asarray(base[position[[pivot]]], np.float32)
        _, proposed = raw.search(query, REFINE_FACTOR * (K + 1), params=params)
        row = proposed[0]
        row = row[(row >= 0) & (row != pivot)]
        vectors = np.asarray(base[position[row]], np.float32)
        scores = (query @ vectors.T)[0]
        order = np.lexsort((row, -scores))[: 2 * K + 1]
        kept, _ = fold(vectors[order], np.ones(len(order), bool), threshold)
        shown = row[order[kept[:K]]].tolist()
        return db.execute(rows_sql, shown).fetchall()

    def library(pivot: int) -> Any:
        return engine.search_page(collection, engine.embed_id(collection, pivot), k=K)

    def bare(pivot: int) -> Any:
        return raw.search(np.asarray(base[position[[pivot]]], np.float32), K + 1)

    ids = collection.catalog.all_ids()
    pivots = [int(i) for i in np.random.default_rng(args.seed).choice(ids, args.queries + 50, replace=False)]
    kinds = {"library": library, "necessary steps": necessary, "bare FAISS": bare}
    for pivot in pivots[:50]:
        for run in kinds.values():
            run(pivot)
    cpu: dict[str, list[float]] = {name: [] for name in kinds}
    names = list(kinds)
    for n, pivot in enumerate(pivots[50:]):
        for name in names[n % 3 :] + names[: n % 3]:  # each kind first, second and third as often
            start = time.thread_time()
            kinds[name](pivot)
            cpu[name].append(time.thread_time() - start)
    p50 = {name: 1000 * float(np.median(times)) for name, times in cpu.items()}
    print(f"\n{args.queries} pivots, index {index.describe()['params']}, {index.ntotal:,} vectors\n")
    print("| search | CPU ms p50 | / bare FAISS |")
    print("|---|---:|---:|")
    for name, value in p50.items():
        print(f"| {name} | {value:.3f} | {value / p50['bare FAISS']:.2f}x |")
    print(f"\nlibrary / necessary steps: {p50['library'] / p50['necessary steps']:.2f}x; {cpu_line()}")


if __name__ == "__main__":
    main()
