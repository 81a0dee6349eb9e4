"""Exact in-filter top-k from an index's proposals: an id bitmap restricts the index's scan to the candidates, the
best proposals are re-scored exactly (ties broken by id, as brute force does), and the proposal widens until no
candidate left out could reach the k-th exact score."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from retrieval.index.exact import Scored

faiss: Any = _faiss
IdArray = npt.NDArray[np.int64]
Propose = Callable[[npt.NDArray[np.float32], int], Scored]  # (query rows, how many) -> the index's own best
Exact = Callable[[npt.NDArray[np.float32], int, IdArray], Scored]  # (query rows, k, ids) -> exact top-k of ids
# Scores of one vector computed two ways (FAISS's kernels, numpy's BLAS) agree to ~1e-7; a lossy index's codes are
# off by far more, and by as much as the proposals themselves show.
FLOAT_SLACK = 1e-5


def bitmap_selector(cand: IdArray) -> tuple[Any, npt.NDArray[np.uint8]]:
    """A FAISS IDSelectorBitmap of the candidate ids, and the bitmap it reads (keep it alive while searching)."""
    mask = np.zeros(int(cand.max()) + 1 if len(cand) else 1, dtype=bool)
    mask[cand] = True
    bitmap = np.packbits(mask, bitorder="little")  # FAISS tests bit (id & 7) of byte (id >> 3)
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap  # n: the bitmap's bytes


def exact_from_proposals(propose: Propose, exact: Exact, q: npt.NDArray[np.float32], k: int, available: int) -> Scored:
    """The exact top-k of `available` candidates for each query row, asking `propose` for its best few first.

    Proposals come best-first by the index's own score; a candidate not proposed scores at most the lowest proposal
    there. Once the k-th exact score is above that plus twice the largest gap seen between the two scores (plus
    float slack), nothing left out can reach or tie it; otherwise four times as many are proposed."""
    rows = [_one(propose, exact, q[r : r + 1], k, available) for r in range(len(q))]
    width = min(r[0].shape[1] for r in rows)
    return (
        np.concatenate([s[:, :width] for s, _ in rows]).astype(np.float32),
        np.concatenate([i[:, :width] for _, i in rows]).astype(np.int64),
    )


def _one(propose: Propose, exact: Exact, q: npt.NDArray[np.float32], k: int, available: int) -> Scored:
    fetch = min(available, max(4 * k, k + 32))
    while True:
        proposed_scores, proposed = propose(q, fetch)
        valid = proposed[0] >= 0
        ids, index_scores = proposed[0][valid], proposed_scores[0][valid]
        scores, ranked = exact(q, len(ids), ids)
        if fetch >= available or len(ids) < fetch or len(ids) <= k:  # every candidate the index holds was proposed
            return scores[:, :k], ranked[:, :k]
        by_id = dict(zip(ranked[0].tolist(), scores[0].tolist(), strict=True))
        gap = max(abs(by_id[i] - s) for i, s in zip(ids.tolist(), index_scores.tolist(), strict=True) if i in by_id)
        if float(scores[0][k - 1]) > float(index_scores.min()) + 2 * gap + FLOAT_SLACK:
            return scores[:, :k], ranked[:, :k]
        fetch = min(available, fetch * 4)
