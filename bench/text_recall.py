"""Recall@10 of the default (quantised) index against exact search, for image-like and text-like queries, with the
unfiltered re-rank's refine factor varied: the codes propose k x R, the float vectors rank (issue 22 item 4).

Text queries are synthetic, modelled on SigLIP's text-image geometry: a caption's cosine with its matching images
is small (~0.1-0.2) and close to its cosine with unrelated ones (~0 +- 0.03 at width 1152), so the top-10 sit
within a few hundredths of each other. Each text vector is unit(a * v + sqrt(1 - a^2) * r), v a stored image's
vector and r a random unit vector: its cosine with v is ~a, with v's neighbours ~a x their cosine with v, with
the rest ~a x (their cosine with v) + N(0, 1/sqrt(width)). Image queries are stored vectors plus small noise.

    python bench/text_recall.py DATA_DIR --alpha 0.2 --queries 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from machine import cpu_line

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="a data folder whose index is ivf-sq8 (saved with its vectors)")
    parser.add_argument("--alpha", type=float, default=0.2, help="text vectors' cosine with their image")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(cpu_line())
    index: Any = faiss.read_index(str(args.data_dir / "index.faiss"))
    records = np.load(args.data_dir / "index.faiss.vectors.npy", mmap_mode="r")
    ids, vectors = np.asarray(records["id"]), np.asarray(records["vector"])
    rng = np.random.default_rng(3)
    picks = rng.choice(len(ids), size=args.queries, replace=False)
    width = vectors.shape[1]
    noise = rng.standard_normal((args.queries, width)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    a = args.alpha
    kinds = {
        "text": a * vectors[picks] + np.sqrt(1 - a * a) * noise,
        "image": vectors[picks] + 0.3 * noise,
    }
    out: dict[str, Any] = {"cpu": cpu_line(), "vectors": len(ids), "nprobe": int(index.nprobe), "alpha": a}
    for kind, queries in kinds.items():
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        exact = queries @ vectors.T
        truth = [set(ids[np.argsort(-row)[:K]].tolist()) for row in exact]
        top = np.sort(exact, axis=1)[:, ::-1]
        out[f"{kind} cosine top1 / top10 / median"] = [
            round(float(np.median(top[:, 0])), 3),
            round(float(np.median(top[:, K - 1])), 3),
            round(float(np.median(np.median(exact, axis=1))), 3),
        ]
        row_of = {int(i): n for n, i in enumerate(ids)}
        for refine in (1, 2, 4, 8, 16):
            _, proposed = index.search(queries, K * refine)
            recalls = []
            for q, found, want in zip(queries, proposed, truth, strict=True):
                found = found[found >= 0]
                scores = vectors[[row_of[int(i)] for i in found]] @ q
                best = found[np.argsort(-scores, kind="stable")[:K]]
                recalls.append(len(want & set(best.tolist())) / K)
            out[f"{kind} recall@10 refine {refine}"] = round(float(np.mean(recalls)), 4)
            print(f"{kind:5s} refine x{refine:<2d}: recall@10 {np.mean(recalls):.4f} (min {np.min(recalls):.1f})")
        cosines = out[f"{kind} cosine top1 / top10 / median"]
        print(f"{kind:5s} cosines (median over queries) top1/top10/median: {cosines}")
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
