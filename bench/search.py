"""Search benchmark: every FAISS index type medsearch builds, plus hnswlib, on synthetic clustered unit vectors.

For each size the vectors (width 1152, L2-normalised, clustered around centres on low-dimensional local
subspaces, as embeddings are) are generated in chunks into a np.memmap under the work folder, never held
whole in memory. Exact top-10 of held-out queries is computed by a chunked scan. Each configuration is
built in one child process (build seconds, peak RSS) and saved; a second child loads the saved index and
answers the queries one at a time (p50/p99 latency, recall@10 against exact, resident memory), so each
memory figure is one index in one fresh process.

    python bench/search.py --sizes 100000 1000000 --json /tmp/bench-search.json

The filtered case (bench/search_filtered.py) runs the product's filtered search on a medsearch data folder:

    python bench/search.py --filtered DATA_DIR --model MODEL_DIR --json /tmp/bench-filtered.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WIDTH = 1152
K = 10
CHUNK = 50_000
LOCAL_DIMS = 24  # each cluster spreads over its own random 24-dimensional subspace ...
LOCAL_SCALE = 0.6  # ... by this much (norm) around a unit centre ...
NOISE_SCALE = 0.35  # ... plus isotropic noise of this norm: neighbours have cosine ~0.8, cluster mates ~0.65


# -- data ---------------------------------------------------------------------------------------
def generate(path: Path, n: int, seed: int) -> np.memmap:
    """n clustered unit vectors into a float32 memmap (deterministic for a seed)."""
    if path.exists() and path.stat().st_size == n * WIDTH * 4:
        return np.memmap(path, dtype=np.float32, mode="r", shape=(n, WIDTH))
    rng = np.random.default_rng(1234)  # the same centres for the base set and its queries
    clusters = max(64, n // 1000)
    centres = rng.standard_normal((clusters, WIDTH)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, LOCAL_DIMS, WIDTH)).astype(np.float32) / np.sqrt(WIDTH)
    out = np.memmap(path.with_suffix(".tmp"), dtype=np.float32, mode="w+", shape=(n, WIDTH))
    local = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        which = local.integers(0, clusters, m)
        z = local.standard_normal((m, LOCAL_DIMS)).astype(np.float32) * (LOCAL_SCALE / np.sqrt(LOCAL_DIMS))
        block = centres[which]
        for c in np.unique(which):  # one small matmul per cluster (gathering bases per row would take GBs)
            rows = np.flatnonzero(which == c)
            block[rows] += z[rows] @ bases[c]
        block += local.standard_normal((m, WIDTH)).astype(np.float32) * (NOISE_SCALE / np.sqrt(WIDTH))
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp"), path)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, WIDTH))


def exact_top(base: np.memmap, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k ids of each query by a chunked scan of the memmap."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(base), CHUNK):
        block = np.asarray(base[start : start + CHUNK])
        scores = queries @ block.T
        ids = np.arange(start, start + len(block))
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


# -- configurations -------------------------------------------------------------------------------
@dataclass
class Config:
    name: str
    kind: str  # flat | hnsw | ivf-sq8 | ivf-fp16 | hnswlib
    build: dict[str, int]
    sweep: list[int]  # nprobe (IVF) or ef (HNSW) values measured on the same loaded index


def configs(n: int, hnsw_max: int) -> list[Config]:
    from retrieval.index.faiss_types import default_nlist

    nlist = default_nlist(n)
    ivf_sweep = sorted({p for p in (4, 8, 16, 32, 64, 128) if p <= nlist})
    out = [
        Config("flat (exact)", "flat", {}, [0]),
        Config(f"ivf-sq8 nlist={nlist}", "ivf-sq8", {"nlist": nlist}, ivf_sweep),
        Config(f"ivf-fp16 nlist={nlist}", "ivf-fp16", {"nlist": nlist}, ivf_sweep),
    ]
    if n <= hnsw_max:
        out += [
            Config("hnsw M=32 efC=80", "hnsw", {"m": 32, "ef_construction": 80}, [16, 32, 64, 128]),
            Config("hnswlib M=32 efC=80", "hnswlib", {"m": 32, "ef_construction": 80}, [16, 32, 64, 128]),
        ]
    return out


# -- child processes ------------------------------------------------------------------------------
def rss_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def child_build(args: argparse.Namespace) -> dict[str, Any]:
    """Build one index from the memmap with 2 threads, save it, report seconds and peak memory."""
    import faiss

    from retrieval.index import faiss_types as types

    faiss.omp_set_num_threads(args.threads)
    base = np.memmap(args.data, dtype=np.float32, mode="r", shape=(args.n, WIDTH))
    build = json.loads(args.build)
    started = time.perf_counter()
    trained_on = 0
    if args.kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=WIDTH)
        index.init_index(max_elements=args.n, M=build["m"], ef_construction=build["ef_construction"])
        index.set_num_threads(args.threads)
        for start in range(0, args.n, CHUNK):
            block = np.asarray(base[start : start + CHUNK])
            index.add_items(block, np.arange(start, start + len(block)))
        seconds = time.perf_counter() - started
        index.save_index(args.out)
    else:
        params = types.IndexParams(type=args.kind, **build)  # type: ignore[arg-type]
        index = types.new_index(params, WIDTH)
        if params.is_ivf:
            trained_on = types.train_size(params, args.n)
            pick = np.sort(np.random.default_rng(0).choice(args.n, trained_on, replace=False))
            index.train(np.ascontiguousarray(base[pick]))
        for start in range(0, args.n, CHUNK):
            block = np.ascontiguousarray(base[start : start + CHUNK])
            index.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        seconds = time.perf_counter() - started
        faiss.write_index(index, args.out)
    return {"build_s": seconds, "build_peak_mb": rss_mb()["VmHWM"], "trained_on": trained_on}


def child_query(args: argparse.Namespace) -> dict[str, Any]:
    """Load the saved index in a fresh process and answer queries one at a time, single-threaded."""
    import faiss

    from retrieval.index import faiss_types as types

    faiss.omp_set_num_threads(1)
    queries = np.load(args.qfile)
    truth = np.load(args.truth)
    before = rss_mb()["VmRSS"]
    if args.kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=WIDTH)
        index.load_index(args.out, max_elements=args.n)
        index.set_num_threads(1)
    else:
        index = faiss.read_index(args.out)
        params = types.read_params(index)
        assert params is not None
    results = []
    for value in json.loads(args.sweep):
        if args.kind == "hnswlib":
            index.set_ef(max(value, K))

            def one(q: np.ndarray) -> np.ndarray:
                return index.knn_query(q, k=K)[0][0]
        else:
            from dataclasses import replace

            tuned = params
            if params.is_ivf:
                tuned = replace(params, nprobe=value)
            elif params.type == "hnsw":
                tuned = replace(params, ef_search=value)
            sp = types.search_parameters(tuned, None, K)

            def one(q: np.ndarray) -> np.ndarray:
                return (index.search(q[None], K, params=sp) if sp else index.search(q[None], K))[1][0]  # noqa: B023

        for q in queries[:5]:
            one(q)  # warm-up
        times, found = [], []
        for q in queries[: args.nq]:
            t0 = time.perf_counter()
            ids = one(q)
            times.append(time.perf_counter() - t0)
            found.append(ids)
        overlap = [len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=False)]
        recall = float(np.mean(overlap))
        results.append(
            {
                "param": value,
                "p50_ms": 1000 * float(np.percentile(times, 50)),
                "p99_ms": 1000 * float(np.percentile(times, 99)),
                "recall_at_10": recall,
                "queries": len(times),
            }
        )
    mem = rss_mb()
    return {"sweep": results, "rss_mb": mem["VmRSS"], "rss_index_mb": mem["VmRSS"] - before, "peak_mb": mem["VmHWM"]}


def run_child(mode: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode]
    for key, value in kwargs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- driver ---------------------------------------------------------------------------------------
def load1() -> float:
    return os.getloadavg()[0]


def bench_size(n: int, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    data = work / f"vectors-{n}.f32"
    base = generate(data, n, seed=n)
    queries = np.asarray(generate(work / f"queries-{n}.f32", args.queries, seed=n + 1))
    print(f"[{n:,}] data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    truth = exact_top(base, queries)
    print(f"[{n:,}] exact top-{K} of {len(queries)} queries in {time.perf_counter() - t0:.0f} s", flush=True)
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    del base
    rows = []
    for cfg in configs(n, args.hnsw_max):
        if args.only and cfg.kind not in args.only:
            continue
        out = work / f"{cfg.kind}-{n}.index"
        load_before = load1()
        built = run_child(
            "build", kind=cfg.kind, n=n, data=data, out=out, build=json.dumps(cfg.build), threads=args.threads
        )
        nq = min(args.queries, args.flat_queries) if cfg.kind == "flat" else args.queries
        queried = run_child(
            "query",
            kind=cfg.kind,
            n=n,
            out=out,
            qfile=work / "queries.npy",
            truth=work / "truth.npy",
            sweep=json.dumps(cfg.sweep),
            nq=nq,
        )
        file_mb = out.stat().st_size / 2**20
        out.unlink()
        for point in queried["sweep"]:
            row = {
                "n": n,
                "config": cfg.name,
                "kind": cfg.kind,
                "param": point["param"],
                **{k: built[k] for k in ("build_s", "build_peak_mb", "trained_on")},
                "file_mb": file_mb,
                "rss_mb": queried["rss_mb"],
                "rss_index_mb": queried["rss_index_mb"],
                **{k: point[k] for k in ("p50_ms", "p99_ms", "recall_at_10", "queries")},
                "load1": round((load_before + load1()) / 2, 2),
            }
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def param_name(row: dict[str, Any]) -> str:
    if row["kind"].startswith("ivf"):
        return f"nprobe={row['param']}"
    if row["kind"] in ("hnsw", "hnswlib"):
        return f"ef={row['param']}"
    return "-"


def format_row(row: dict[str, Any]) -> str:
    return (
        f"| {row['n']:,} | {row['config']} | {param_name(row)} | {row['build_s']:.1f} | {row['p50_ms']:.2f} | "
        f"{row['p99_ms']:.2f} | {row['recall_at_10']:.3f} | {row['rss_mb']:,.0f} | {row['file_mb']:,.0f} | "
        f"{row['build_peak_mb']:,.0f} | {row['load1']} |"
    )


HEADER = (
    "| vectors | index | search param | build s | p50 ms | p99 ms | recall@10 | RSS MB | file MB | build peak MB "
    "| load |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="held-out queries per size")
    parser.add_argument("--flat-queries", type=int, default=50, help="queries for the exact index (slow at 1M)")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="build HNSW/hnswlib only up to this size")
    parser.add_argument("--threads", type=int, default=2, help="build threads")
    parser.add_argument("--only", nargs="*", help="only these kinds (flat hnsw ivf-sq8 ivf-fp16 hnswlib)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medsearch-bench-search"))
    parser.add_argument("--json", type=Path, help="also write all rows here")
    parser.add_argument("--filtered", type=Path, help="a medsearch data folder: run the filtered case on it")
    parser.add_argument("--model", type=Path, help="the model folder of --filtered's collection")
    parser.add_argument("--child", choices=["build", "query"], help=argparse.SUPPRESS)
    for name in ("kind", "data", "out", "build", "sweep", "truth", "qfile"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nq", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.filtered:
        from search_filtered import run

        print(cpu_line(), flush=True)
        rows = [{**row, "cpu": cpu_line()} for row in run(args.filtered, args.model, args.queries)]
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=str))
        return
    if args.child == "build":
        print(json.dumps(child_build(args)))
        return
    if args.child == "query":
        print(json.dumps(child_query(args)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{cpu_line()}, load {os.getloadavg()}, started {started}")
    print(HEADER, flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows += [{**row, "cpu": cpu_line()} for row in bench_size(n, args, args.work)]
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print("\n" + cpu_line())
    print(HEADER)
    for row in rows:
        print(format_row(row))


if __name__ == "__main__":
    main()
