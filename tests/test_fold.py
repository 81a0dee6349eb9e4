"""Folding near-duplicates over a page of ranked rows: the same kept rows and copy counts whatever way the Gram
matrix is multiplied (two halves up to GRAM_HALVES_MAX rows, one product beyond)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.duplicates import GRAM_HALVES_MAX, fold

THRESHOLD = 0.9999


def _reference(vectors: np.ndarray, have: np.ndarray, threshold: float) -> tuple[list[int], list[int]]:
    """Folding as its rule reads, pair by pair in float64: a row folds into the kept row it is most similar to when
    that cosine reaches the threshold; rows without a vector are kept."""
    kept: list[int] = []
    copies: list[int] = []
    for position in range(len(vectors)):
        if have[position]:
            cosines = [(float(np.dot(vectors[position].astype(np.float64), vectors[k])), n) for n, k in enumerate(kept)]
            cosines = [(c, n) for c, n in cosines if have[kept[n]]]
            if cosines:
                best, at = max(cosines, key=lambda pair: (pair[0], -pair[1]))
                if best >= threshold:
                    copies[at] += 1
                    continue
        kept.append(position)
        copies.append(0)
    return kept, copies


def _page(rows: int, copies_of: dict[int, int], rng: np.random.Generator, width: int = 1152) -> np.ndarray:
    """Unit rows; row r (a key of `copies_of`) a copy (cosine ~1 - 1e-9) of the row it maps to."""
    vectors = rng.standard_normal((rows, width)).astype(np.float32)
    for copy, original in copies_of.items():
        vectors[copy] = vectors[original] + 1e-6 * rng.standard_normal(width).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rows", [2, 3, 11, 21, GRAM_HALVES_MAX, GRAM_HALVES_MAX + 1, 44, 90])
def test_fold_keeps_what_the_rule_keeps_at_every_page_size(rows: int) -> None:
    rng = np.random.default_rng(rows)
    for trial in range(6):
        # copies on both sides of the halves' boundary, a copy of a copy, and none at all
        plan = {} if trial == 0 else {rows - 1: 0, rows // 2: max(0, rows // 2 - 1)} if rows > 2 else {1: 0}
        if trial >= 3 and rows > 4:
            plan[rows // 2 + 1] = rows // 2  # a copy of a copy: folds into the kept original
        vectors = _page(rows, plan, rng)
        have = np.ones(rows, bool)
        if trial == 5:
            have[rng.integers(rows)] = False  # a hit whose vector is missing: kept, never folded
            vectors[~have] = 0.0
        kept, copies = fold(vectors, have, THRESHOLD)
        assert (kept, copies) == _reference(vectors, have, THRESHOLD), (rows, trial, plan)
        assert sum(copies) == rows - len(kept)
        if plan and have.all():
            assert sum(copies) == len(plan)  # every planted copy folded, nothing else
