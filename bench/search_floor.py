"""The query path against its floor, before/after side by side: search by id and filtered search (1 %, 0.1 %)
through the library vs the same work done directly on the same index (issue 22).

Each round runs one child process per source tree on the same data folder, alternating which goes first; a
child loads the collection, warms up, then times the library call and the floor for the same queries:

- by id: `embed_id` + `search_page` (k=10, folding on) vs the bare FAISS search of the stored vector;
- filtered: `search_page` with a study-date window admitting ~1 % / ~0.1 % vs the floor (candidate ids given,
  FAISS IDSelectorBitmap over every list, exact re-score of its best 4k from in-memory float32 vectors);
  recall@10 of the library against brute force over the candidates' stored vectors, ties broken by id.

Wall-clock p50s and the calling thread's CPU time p50s are both reported: on a machine shared by other jobs the
wall clock mostly measures waiting for a core, the CPU time what the call itself costs.

    python bench/search_floor.py DATA_DIR MODEL_DIR --compare /tmp/main-tree --rounds 3 --json out.json

At 1M, `--by-id-only` times the search by id alone and reads only the pivots' vectors (the filtered floor holds
every stored vector in memory twice: 9 GB at 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_line

K = 10


def child(data_dir: Path, model_dir: Path, queries: int, seed: int, by_id_only: bool = False) -> dict[str, Any]:
    """One tree's figures: per-query seconds of each kind, and the filtered searches' recall (`by_id_only`: the
    search by id alone, no stored vector read beyond the pivots': what a 1M collection allows in memory)."""
    import faiss
    from search_filtered import date_windows

    from retrieval import query as engine
    from retrieval.collection import Collection
    from retrieval.index.exact import top_k
    from retrieval.settings import Settings

    collection = Collection(Settings(data_dir=data_dir, model=str(model_dir)))
    index: Any = collection.index
    assert index is not None
    faiss.omp_set_num_threads(1)
    raw = index._index  # the bare FAISS index the library searches
    ids = collection.catalog.all_ids()
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"ntotal": int(index.ntotal), "index": index.describe()["params"]}
    pivots = [int(i) for i in rng.choice(ids, size=queries, replace=False)]
    if by_id_only:
        all_ids = np.asarray(pivots, np.int64)
        held = index.vectors(all_ids)
        all_vecs = np.stack([held[i] for i in pivots])
    else:
        all_ids = np.empty(len(ids), np.int64)  # filled in place: at 1M a list of parts plus its concatenation
        all_vecs = np.empty((len(ids), index.width), np.float32)  # would hold the 4.6 GB of stored vectors twice
        filled = 0
        for part_ids, part_vecs in collection.catalog.iter_vectors():
            all_ids[filled : filled + len(part_ids)], all_vecs[filled : filled + len(part_ids)] = part_ids, part_vecs
            filled += len(part_ids)
        all_ids, all_vecs = all_ids[:filled], all_vecs[:filled]
    row_of = {int(i): n for n, i in enumerate(all_ids)}
    times: dict[str, list[float]] = {"by-id library": [], "by-id faiss": []}
    cpu: dict[str, list[float]] = {"by-id library": [], "by-id faiss": []}  # this thread's CPU seconds
    for warm in pivots[:20]:
        engine.search_page(collection, engine.embed_id(collection, warm), k=K)
    for n, pivot in enumerate(pivots):
        # which goes first alternates: the second search of a pivot finds the same inverted lists in the CPU's
        # caches (measured: FAISS second 0.33 ms CPU, first 0.37 ms on the 100k collection)
        vector = all_vecs[row_of[pivot]][None]
        for kind in ("by-id library", "by-id faiss") if n % 2 == 0 else ("by-id faiss", "by-id library"):
            t0, c0 = time.perf_counter(), time.thread_time()
            if kind == "by-id library":
                engine.search_page(collection, engine.embed_id(collection, pivot), k=K)
            else:
                raw.search(vector, K + 1)
            times[kind].append(time.perf_counter() - t0)
            cpu[kind].append(time.thread_time() - c0)
    nlist = int(getattr(raw, "nlist", 0) or 0)
    for share in () if by_id_only else (0.01, 0.001):
        label = f"filtered {share:.1%}"
        lib_t, floor_t, recalls, lib_c, floor_c = [], [], [], [], []
        for filters in date_windows(collection, share, queries // 2, rng):
            pivot = int(rng.choice(ids))
            noisy = all_vecs[row_of[pivot]] + 0.3 * rng.standard_normal(all_vecs.shape[1]).astype(np.float32) / 34
            query = (noisy / np.linalg.norm(noisy)).astype(np.float32)
            cand = collection.catalog.candidate_ids(filters)
            assert cand is not None
            t0, c0 = time.perf_counter(), time.thread_time()
            hits, _ = engine.search_page(collection, engine.QueryVector(query, "image"), k=K, filters=filters)
            t1, c1 = time.perf_counter(), time.thread_time()
            bitmap = np.zeros((int(all_ids.max()) + 8) // 8, np.uint8)
            np.bitwise_or.at(bitmap, cand >> 3, (1 << (cand & 7)).astype(np.uint8))
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
            params = (
                faiss.SearchParametersIVF(sel=selector, nprobe=nlist) if nlist else faiss.SearchParameters(sel=selector)
            )
            _, found = raw.search(query[None], min(4 * K, len(cand)), params=params)
            found = found[0][found[0] >= 0]
            rows = [row_of[int(i)] for i in found]
            top_k(query[None], found, all_vecs[rows], K)
            t2, c2 = time.perf_counter(), time.thread_time()
            lib_c.append(c1 - c0)
            floor_c.append(c2 - c1)
            rows = [row_of[int(i)] for i in cand if int(i) in row_of]
            _, truth = top_k(query[None], all_ids[rows], all_vecs[rows], K)
            shown = [
                h.image.id
                for h in engine.search(
                    collection, engine.QueryVector(query, "image"), k=K, filters=filters, show_duplicates=True
                )
            ]
            recalls.append(len(set(shown) & set(truth[0].tolist())) / min(K, len(truth[0])) if len(truth[0]) else 1.0)
            lib_t.append(t1 - t0)
            floor_t.append(t2 - t1)
            del hits
        times[f"{label} library"] = lib_t
        times[f"{label} floor"] = floor_t
        cpu[f"{label} library"] = lib_c
        cpu[f"{label} floor"] = floor_c
        out[f"{label} recall"] = float(np.mean(recalls))
        out[f"{label} recall min"] = float(np.min(recalls))
    collection.close()
    out["times"] = times
    out["cpu"] = cpu
    return out


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One child on `tree`'s code (PYTHONPATH), its JSON result."""
    env = {**os.environ, "PYTHONPATH": f"{tree}:{Path(__file__).resolve().parent}", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, str(args.data_dir), str(args.model_dir), "--child", "--queries", str(args.queries)]
    cmd += ["--by-id-only"] if args.by_id_only else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"child on {tree} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--compare", type=Path, help="the 'before' source tree (e.g. a detached worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--by-id-only", action="store_true", help="only the search by id (no filtered searches)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.data_dir, args.model_dir, args.queries, 0, args.by_id_only)))
        return
    print(cpu_line(), flush=True)
    trees = {"after": Path(__file__).resolve().parent.parent}
    if args.compare:
        trees = {"before": args.compare.resolve(), **trees}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            rounds[name].append(run_tree(tree, args))
            print(f"round {r + 1} {name} done, load {os.getloadavg()[0]:.1f}", flush=True)
    summary: dict[str, Any] = {"cpu": cpu_line(), "rounds": args.rounds, "queries": args.queries}
    print("\n| tree | what | p50 ms (median of rounds) | spread of round p50s | p99 ms | CPU ms p50 |")
    print("|---|---|---:|---|---:|---:|")
    for name, results in rounds.items():
        for kind in results[0]["times"]:
            p50s = [1000 * float(np.percentile(r["times"][kind], 50)) for r in results]
            p99s = [1000 * float(np.percentile(r["times"][kind], 99)) for r in results]
            summary[f"{name} {kind} p50"] = round(float(np.median(p50s)), 3)
            cpus = [1000 * float(np.percentile(r["cpu"][kind], 50)) for r in results]
            summary[f"{name} {kind} cpu p50"] = round(float(np.median(cpus)), 3)
            spread = f"{min(p50s):.2f}-{max(p50s):.2f}"
            p50, p99, cpu_p50 = np.median(p50s), np.median(p99s), np.median(cpus)
            print(f"| {name} | {kind} | {p50:.2f} | {spread} | {p99:.2f} | {cpu_p50:.2f} |")
        # each round's library / FAISS ratio (CPU), both timed in the same child: steadier under load than the
        # ratio of the two medians, which may come from different rounds
        ratios = [
            float(np.percentile(r["cpu"]["by-id library"], 50) / np.percentile(r["cpu"]["by-id faiss"], 50))
            for r in results
        ]
        summary[f"{name} by-id ratio"] = round(float(np.median(ratios)), 3)
        print(
            f"| {name} | by-id library / FAISS (CPU, per round) | {np.median(ratios):.2f}x | "
            f"{min(ratios):.2f}-{max(ratios):.2f}x | | |"
        )
        for key in results[0]:
            if "recall" in key:
                summary[f"{name} {key}"] = min(r[key] for r in results)
                print(f"| {name} | {key} | {min(r[key] for r in results):.4f} | | | |")
    print(f"\nindex {rounds['after'][0]['index']}, {rounds['after'][0]['ntotal']:,} vectors; {cpu_line()}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
