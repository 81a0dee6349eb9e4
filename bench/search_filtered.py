"""Filtered search on a real medsearch data folder: a 1 %- and a 0.1 %-selective SQL filter (study date
windows), the product's path (candidate ids in SQL, then the index restricted to them), recall@10 against brute
force over the filtered set's stored float vectors.

    python bench/search.py --filtered DATA_DIR --model MODEL_DIR     # e.g. the folder bench/api_load.py --keep built
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.index.exact import top_k
from retrieval.settings import Settings
from retrieval.store.models import Image
from retrieval.store.repo import Filters

K = 10


def date_windows(collection: Collection, share: float, count: int, rng: np.random.Generator) -> list[Filters]:
    """`count` study-date windows each admitting about `share` of the images (consecutive days from a random
    start until the share is reached)."""
    with collection.catalog.sessions() as session:
        per_day = dict(session.execute(select(Image.study_date, func.count()).group_by(Image.study_date)).all())
    days = sorted(d for d in per_day if d is not None)
    total = sum(per_day.values())
    windows = []
    for start in rng.integers(0, len(days) // 2, size=count):
        first = days[int(start)]
        last, have = first, 0
        for day in days[int(start) :]:
            have += per_day[day]
            last = day
            if have >= share * total:
                break
        windows.append(Filters(date_from=first, date_to=last))
    return windows


def run(data_dir: Path, model_dir: Path, queries: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """Every selectivity: p50/p99 of the candidate SQL, of the restricted index search and of the whole
    `engine.search`, and recall@10 of the index search against brute force over the same candidates."""
    collection = Collection(Settings(data_dir=data_dir, model=str(model_dir)))
    index = collection.index
    assert index is not None, "no index in this data folder"
    rng = np.random.default_rng(seed)
    ids = collection.catalog.all_ids()
    rows = []
    try:
        for share in (0.01, 0.001):
            sql_t, index_t, total_t, recalls, sizes = [], [], [], [], []
            for filters in date_windows(collection, share, queries, rng):
                pivot = int(rng.choice(ids))
                base = collection.catalog.vector(pivot)
                assert base is not None
                noisy = base + 0.3 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(len(base))
                query = (noisy / np.linalg.norm(noisy)).astype(np.float32)
                t0 = time.perf_counter()
                candidates = collection.catalog.candidate_ids(filters)
                t1 = time.perf_counter()
                assert candidates is not None
                _, found = index.search(query, K, candidates)
                t2 = time.perf_counter()
                engine.search(collection, engine.QueryVector(query, "image"), k=K, filters=filters)
                t3 = time.perf_counter()
                parts = list(collection.catalog.iter_vectors(candidates.tolist()))
                stored_ids = np.concatenate([i for i, _ in parts])
                _, truth = top_k(query[None], stored_ids, np.concatenate([v for _, v in parts]), K)
                recalls.append(len(set(found[0].tolist()) & set(truth[0].tolist())) / K)
                sql_t.append(t1 - t0)
                index_t.append(t2 - t1)
                total_t.append(t3 - t2)
                sizes.append(len(candidates))
            row = {
                "vectors": index.ntotal,
                "index": index.describe()["params"],
                "share": share,
                "candidates_mean": float(np.mean(sizes)),
                "queries": len(recalls),
                "recall_at_10": float(np.mean(recalls)),
                "recall_min": float(np.min(recalls)),
                **{
                    f"{name}_{q}_ms": round(1000 * float(np.percentile(times, p)), 2)
                    for name, times in (("sql", sql_t), ("index", index_t), ("search", total_t))
                    for q, p in (("p50", 50), ("p99", 99))
                },
                "load1": os.getloadavg()[0],
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
            }
            rows.append(row)
            print(row, flush=True)
    finally:
        collection.close()
    return rows
