"""Exact top-k by inner product over an explicit set of vectors (the filtered-search path for few candidates)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Scored = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def empty_result(rows: int) -> Scored:
    """No hits for each of `rows` queries."""
    return np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)


def top_k(
    queries: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], k: int
) -> Scored:
    """Best k of `vectors` per query row, by score then by id (a stable order for equal scores)."""
    k = min(k, len(ids))
    if k == 0:
        return empty_result(len(queries))
    scores = queries @ np.ascontiguousarray(vectors, dtype=np.float32).T
    out_scores = np.empty((len(queries), k), np.float32)
    out_ids = np.empty((len(queries), k), np.int64)
    for row, row_scores in enumerate(scores):
        best = np.argpartition(-row_scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        order = best[np.lexsort((ids[best], -row_scores[best]))]
        out_scores[row], out_ids[row] = row_scores[order], ids[order]
    return out_scores, out_ids
