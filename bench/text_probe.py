"""A text query's wider probe (`retrieval.query.TEXT_PROBE`) through the library, before and after side by side in one
process: recall@10 of `engine.search` against brute force over the index's float vectors, and the search's CPU
time, with TEXT_PROBE = 1 (every query visits the index's own nprobe) and with the product's value, alternating
which runs first from query to query.

Text vectors are modelled as in `bench/text_recall.py`: unit(a * v + sqrt(1 - a^2) * r), v a stored image's vector
and r a random unit vector (a = 0.2: cosines to images small and close together, as SigLIP's are). Folding is off
(`show_duplicates`) so the hits are the ranked top-k that brute force is compared with; the collections of
`bench/api_load.py` and `bench/search_floor.py` hold no duplicate vectors.

    python bench/text_probe.py DATA_DIR MODEL_DIR --queries 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_line
from text_recall import K, exact_top, synthetic_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--alpha", type=float, default=0.2, help="text vectors' cosine with their image")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    import faiss

    from retrieval import query as engine
    from retrieval.collection import Collection
    from retrieval.index.faiss_types import search_parameters
    from retrieval.settings import Settings

    print(cpu_line(), flush=True)
    faiss.omp_set_num_threads(1)
    collection = Collection(Settings(data_dir=args.data_dir, model=str(args.model_dir)))
    index: Any = collection.index
    exact = index._exact
    assert exact is not None, "needs a quantised index with its float vectors"
    assert not exact._added and not exact._removed, "a saved index (no changes since it was written)"
    ids, vectors = np.asarray(exact._base_ids, np.int64), exact._base
    queries = synthetic_queries(vectors, args.queries, args.alpha, np.random.default_rng(args.seed))["text"]
    truth, _ = exact_top(queries, ids, vectors)
    product = engine.TEXT_PROBE
    probes = {"before (probe 1)": 1.0, f"after (probe {product:g})": product}
    recall: dict[str, list[float]] = {name: [] for name in probes}
    cpu: dict[str, list[float]] = {name: [] for name in probes}
    for query in queries[:20]:  # warm-up
        engine.search(collection, engine.QueryVector(vector=query, kind="text"), k=K, show_duplicates=True)
    names = list(probes)
    for n, (query, want) in enumerate(zip(queries, truth, strict=True)):
        for name in names[n % 2 :] + names[: n % 2]:
            engine.TEXT_PROBE = probes[name]
            start = time.thread_time()
            hits = engine.search(collection, engine.QueryVector(vector=query, kind="text"), k=K, show_duplicates=True)
            cpu[name].append(time.thread_time() - start)
            recall[name].append(len(want & {hit.image.id for hit in hits}) / K)
    engine.TEXT_PROBE = product
    described = f"index {index.describe()['params']}, {index.ntotal:,} vectors"
    print(f"\n{args.queries} text queries (a = {args.alpha}), {described}\n")
    print("| text search (library) | lists visited | recall@10 | worst query | CPU ms p50 |")
    print("|---|---:|---:|---:|---:|")
    for name, probe in probes.items():
        lists = search_parameters(index.params, None, K, probe).nprobe  # the lists the index is asked to visit
        print(
            f"| {name} | {lists} | {np.mean(recall[name]):.4f} | {np.min(recall[name]):.1f} "
            f"| {1000 * np.median(cpu[name]):.3f} |"
        )
    print(f"\n{cpu_line()}")


if __name__ == "__main__":
    main()
