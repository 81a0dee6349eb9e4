"""Exact top-k by inner product over explicit vectors, and the stored-vector scorer every back end shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

Scored = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def empty_result(rows: int) -> Scored:
    """No hits for each of `rows` queries."""
    return np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64)


def top_k(
    queries: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], k: int
) -> Scored:
    """Best k of `vectors` per query row, by score then by id: among equal scores the lowest ids, also at the k-th
    place (brute force's order, which every exact path reproduces)."""
    k = min(k, len(ids))
    if k == 0:
        return empty_result(len(queries))
    scores = queries @ np.ascontiguousarray(vectors, dtype=np.float32).T
    out_scores = np.empty((len(queries), k), np.float32)
    out_ids = np.empty((len(queries), k), np.int64)
    for row, row_scores in enumerate(scores):
        order = _best(row_scores, ids, k)
        out_scores[row], out_ids[row] = row_scores[order], ids[order]
    return out_scores, out_ids


def top_k_rows(
    query: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """`top_k` for one query vector, also giving where each of the best sits in `ids`/`vectors` (so their
    vectors need no second lookup)."""
    k = min(k, len(ids))
    if k == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.intp)
    # the same product as `top_k` (a 1 x n matrix product, not a matrix-vector one): the very same scores
    row_scores = (query.reshape(1, -1) @ np.ascontiguousarray(vectors, dtype=np.float32).T)[0]
    order = _best(row_scores, ids, k)
    return row_scores[order].astype(np.float32), ids[order], order


def _best(row_scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.intp]:
    """Positions of the best k scores, by score then by id (every score tying the k-th takes part, so the lowest
    ids among equals win)."""
    if k < len(ids):
        kth = row_scores[np.argpartition(-row_scores, k - 1)[k - 1]]
        best = np.flatnonzero(row_scores >= kth)
    else:
        best = np.arange(len(ids))
    return best[np.lexsort((ids[best], -row_scores[best]))][:k]


class VectorStore(Protocol):
    """Where the float vectors are kept (the Catalog): the source of truth every index derives from."""

    def iter_vectors(
        self, ids: Iterable[int] | None = None, chunk: int = 4096
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]: ...


class StoredScorer:
    """Exact scores from the stored float vectors: filtered searches over few candidates, and re-ranking a lossy
    index's hits. One component every back end uses, so no index holds the store itself."""

    def __init__(self, store: VectorStore) -> None:
        self._store = store

    def vectors(self, ids: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.float32]]:
        """The stored vectors of these ids (those without one are absent)."""
        found: dict[int, npt.NDArray[np.float32]] = {}
        for part_ids, vecs in self._store.iter_vectors(ids.tolist()):
            found.update(zip(part_ids.tolist(), vecs, strict=True))
        return found

    def score(self, queries: npt.NDArray[np.float32], k: int, candidates: npt.NDArray[np.int64]) -> Scored:
        """Best k of the candidates per query row (candidates without a stored vector are skipped)."""
        ids_parts, vec_parts = [], []
        for ids, vecs in self._store.iter_vectors(candidates.tolist()):
            if len(ids):
                ids_parts.append(ids)
                vec_parts.append(vecs)
        if not ids_parts:
            return empty_result(len(queries))
        return top_k(queries, np.concatenate(ids_parts), np.concatenate(vec_parts), k)
