"""Tags and probes at scale: a 20-prompt vocabulary and one probe over N stored vectors of width 1152.

Side by side, in alternating rounds over the same chunks of the same float32 vectors (read from a file into one
reused buffer, so the page cache, not the process, holds the data):

- medsearch: `Scorer.run`, what `tags apply` and `probe apply` run per chunk (one float32 product with the 20
  prompt vectors and the probe's coefficients side by side, the encoder's own `text_scores` calibration, the
  probe's sigmoid);
- baseline: the plain numpy product `chunk @ W` with the same 21 columns (no calibration, no sigmoid).

Then, each in a fresh child process (its peak RSS is the figure): the same two passes once; reading every
stored vector from the SQLite store the way `apply` does (raw driver rows, one buffer per chunk, no ORM);
and writing the scores (the upserts `apply` does) for a subset, reported separately as rows per second.

    python bench/probes.py --n 1000000 --json /tmp/bench-probes.json

The model is the offline stand-in built at width 1152 (its `text_scores` is MedSigLIP's code; only the two
calibration numbers differ from the real weights, which changes nothing in the timing).
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from machine import cpu_facts, cpu_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WIDTH = 1152
TAGS = 20
PROMPTS = [f"a radiograph showing finding number {i}" for i in range(TAGS)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- data ---------------------------------------------------------------------------------------
def generate(path: Path, n: int, chunk: int) -> None:
    """n random unit vectors, float32, row after row (deterministic)."""
    if path.exists() and path.stat().st_size == n * WIDTH * 4:
        return
    rng = np.random.default_rng(7)
    with open(path.with_suffix(".tmp"), "wb") as out:
        for start in range(0, n, chunk):
            block = rng.standard_normal((min(chunk, n - start), WIDTH), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out.write(block.tobytes())
    path.with_suffix(".tmp").rename(path)


def file_chunks(path: Path, n: int, chunk: int) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """(ids, vectors) chunks read into one reused buffer."""
    buffer = np.empty((chunk, WIDTH), dtype=np.float32)
    with open(path, "rb", buffering=0) as handle:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            view = buffer[:m]
            handle.readinto(memoryview(view).cast("B"))
            yield np.arange(start + 1, start + m + 1, dtype=np.int64), view


def build_store(folder: Path, vectors: Path, n: int, chunk: int) -> str:
    """A medsearch SQLite store (migrated schema) holding the n vectors as stored vectors of n image rows."""
    from retrieval.store.db import make_engine

    database = folder / "medsearch.db"
    url = f"sqlite:///{database}"
    done = folder / "store.done"
    if done.exists() and done.read_text() == str(n):
        return url
    database.unlink(missing_ok=True)
    make_engine(url).dispose()
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    now = "2026-12-02 00:00:00"
    for ids, block in file_chunks(vectors, n, chunk):
        rows = [(int(i), f"bench-{i}", "raster", 1, 1, "bench", "", now) for i in ids]
        connection.executemany(
            "INSERT INTO images (id, instance_key, kind, frame, number_of_frames, source_uri, content_hash,"
            " indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany(
            "INSERT INTO vectors (image_id, vector) VALUES (?, ?)",
            [(int(i), block[j].tobytes()) for j, i in enumerate(ids)],
        )
        connection.commit()
    connection.close()
    done.write_text(str(n))
    return url


# -- the scorer ---------------------------------------------------------------------------------
def scorer(folder: Path) -> Any:
    """20 prompt tags embedded by the width-1152 stand-in and one probe fitted with scikit-learn."""
    from retrieval.encoders.medsiglip import MedSigLIPEncoder
    from retrieval.encoders.standin import build_standin_model
    from retrieval.findings.scoring import Scorer
    from retrieval.findings.training import fit_probe
    from retrieval.store.models import Probe, Tag

    model = folder / "standin-1152"
    if not (model / "config.json").exists():
        build_standin_model(model, width=WIDTH)
    encoder = MedSigLIPEncoder(str(model), "cpu")
    texts = encoder.encode_texts(PROMPTS)
    tags = [Tag(name=f"t{i}", prompt=p, threshold=0.5, vector=texts[i].tobytes()) for i, p in enumerate(PROMPTS)]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, WIDTH)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (x[:, 0] > 0).astype(np.int64)
    fitted = fit_probe(x, y)
    probe = Probe(name="p", version=1, coef=fitted.coef.tobytes(), intercept=fitted.intercept)
    return Scorer.build(tags, [probe], encoder.text_scores)


def run_ours(score: Any, chunks: Iterator[Any]) -> tuple[int, float]:
    n, check = 0, 0.0
    for ids, tag_scores, probe_scores in score.run(chunks):
        n += len(ids)
        check += float(tag_scores[0, 0] + probe_scores[0, 0])
    return n, check


def run_baseline(weights: npt.NDArray[np.float32], chunks: Iterator[Any]) -> tuple[int, float]:
    n, check = 0, 0.0
    for ids, block in chunks:
        product = block @ weights
        n += len(ids)
        check += float(product[0, 0])
    return n, check


def accuracy(score: Any, path: Path, chunk: int) -> dict[str, float]:
    """Largest difference of the stored-to-be numbers from a float64 computation (first chunk)."""
    _, block = next(file_chunks(path, chunk, chunk))
    tag_scores, probe_scores = score.score(block)
    weights = score.weights.astype(np.float64)
    model_scores = score.calibrate(np.zeros((1, 1), np.float32))  # calibration of cosine 0 = sigmoid(bias)
    del model_scores
    coef = np.frombuffer(score.probes[0].coef, dtype=np.float64)
    exact_probe = 1.0 / (1.0 + np.exp(-(block.astype(np.float64) @ coef + score.probes[0].intercept)))
    cosines = block.astype(np.float64) @ weights[:, :TAGS]
    exact_tags = score.calibrate(cosines.astype(np.float32))  # calibration of the exact cosines
    return {
        "max_abs_diff_probe": float(np.max(np.abs(probe_scores[:, 0] - exact_probe))),
        "max_abs_diff_tags": float(np.max(np.abs(np.asarray(tag_scores, np.float64) - exact_tags))),
    }


# -- children (one measurement each, peak RSS of a fresh process) -------------------------------------
def child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.work)
    vectors = folder / "vectors.f32"
    started = time.perf_counter()
    if mode in ("ours", "baseline"):
        score = scorer(folder)
        base_rss = peak_rss_mb()
        started = time.perf_counter()
        if mode == "ours":
            n, _ = run_ours(score, file_chunks(vectors, args.n, args.chunk))
        else:
            n, _ = run_baseline(score.weights, file_chunks(vectors, args.n, args.chunk))
        return {"mode": mode, "n": n, "seconds": time.perf_counter() - started, "rss_before_mb": base_rss}
    from sqlalchemy.orm import sessionmaker

    from retrieval.store.db import make_engine
    from retrieval.store.findings import FindingsStore

    engine = make_engine(f"sqlite:///{folder / 'medsearch.db'}")
    store = FindingsStore(sessionmaker(engine, expire_on_commit=False))
    started = time.perf_counter()
    if mode == "read":
        n = 0
        for ids, _ in store.iter_vectors(args.chunk):
            n += len(ids)
        return {"mode": mode, "n": n, "seconds": time.perf_counter() - started}
    if mode == "write":  # the upserts of `apply`: 20 tag scores and 1 probability per image, for a subset
        from retrieval.findings.common import write_scores

        score = scorer(folder)
        store.save_tags([(t.name, t.prompt, 0.5, np.frombuffer(t.vector, np.float32)) for t in score.tags], "bench")
        chunks = file_chunks(vectors, args.write_n, args.chunk)
        computed = list(score.run(chunks))  # computed first: only the writing is timed
        started = time.perf_counter()
        for ids, tag_scores, probe_scores in computed:
            write_scores(store, score, ids, tag_scores, probe_scores)
        seconds = time.perf_counter() - started
        rows = args.write_n * (TAGS + 1)
        return {"mode": mode, "n": args.write_n, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}
    raise SystemExit(f"unknown mode {mode}")


def in_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--chunk", str(args.chunk)]
    argv += ["--work", args.work, "--write-n", str(args.write_n)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-n", type=int, default=100_000, help="images whose scores are written (timed apart)")
    parser.add_argument("--work", default="/tmp/medsearch-bench-probes")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--children",
        default="ours,baseline,read,write",
        help="the single passes to run in fresh processes ('' for none)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.child, args)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    print(cpu_line(), flush=True)
    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = folder / "vectors.f32"
    t0 = time.perf_counter()
    generate(vectors, args.n, 50_000)
    build_store(folder, vectors, args.n, 50_000)
    setup = time.perf_counter() - t0
    score = scorer(folder)
    rounds = []
    for _ in range(args.rounds):  # alternating, same chunks, same process
        t = time.perf_counter()
        run_ours(score, file_chunks(vectors, args.n, args.chunk))
        ours = time.perf_counter() - t
        t = time.perf_counter()
        run_baseline(score.weights, file_chunks(vectors, args.n, args.chunk))
        base = time.perf_counter() - t
        rounds.append({"ours_s": ours, "baseline_s": base, "ratio": ours / base})
    report = {
        "n": args.n,
        "width": WIDTH,
        "tags": TAGS,
        "probes": 1,
        "chunk": args.chunk,
        "chunk_mb": args.chunk * WIDTH * 4 / 2**20,
        "setup_s": setup,
        "rounds": rounds,
        "median_ratio": float(np.median([r["ratio"] for r in rounds])),
        "accuracy": accuracy(score, vectors, args.chunk),
        "children": {mode: in_child(mode, args) for mode in args.children.split(",") if mode},
        **cpu_facts(),
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
