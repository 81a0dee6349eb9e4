"""Near-duplicates: images whose vectors are practically identical (cosine at or above a threshold)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from retrieval.store.repo import Catalog

# Copies of one image (same pixels, another SOP Instance UID) embed to the same vector up to float noise
# (cosine 1.0000 +- 1e-6); the threshold (MEDSEARCH_DUPLICATE_THRESHOLD, 0.9999) leaves room for that noise
# but not for neighbouring frames of one series (0.999 with the stand-in model).
NEIGHBOURS = 16  # neighbours looked at per image when listing every set (`medsearch duplicates`)
# Hits fetched beyond k when folding, so the copies folded away rarely leave fewer than k (then a second, larger
# search runs). Fetching more costs FAISS almost nothing (a longer heap) and the store one row per hit. With 10 %
# of the rows copies, 375 of 600 searches by id searched twice without a margin, 1 with 4, none with 8
# (bench/fold_margin.py, BENCHMARKS.md).
FOLD_MARGIN_SHARE = 1.0
FOLD_MARGIN_MIN = 8
GRAM_HALVES_MAX = 32  # rows up to which `_gram` multiplies two halves (faster than numpy's syrk there)


def fold_margin(k: int) -> int:
    """Hits fetched beyond k in the one search of a query whose near-duplicates are folded."""
    return max(FOLD_MARGIN_MIN, int(FOLD_MARGIN_SHARE * k))


class HasImageId(Protocol):
    """A search hit as far as collapsing goes (retrieval.query.Hit)."""

    duplicates: int

    @property
    def image_id(self) -> int: ...


H = TypeVar("H", bound=HasImageId)


def collapse(hits: Sequence[H], vectors: dict[int, npt.NDArray[np.float32]], threshold: float) -> list[H]:
    """Keep the best hit of every set of near-duplicates (order kept); each kept hit counts the copies folded in.

    All cosines between the hits come from one small matrix product (a 20-hit page: 20 x 20)."""
    rows = [vectors.get(h.image_id) for h in hits]
    have = np.array([v is not None for v in rows], bool)
    if int(have.sum()) < 2:
        return list(hits)
    width = len(next(v for v in rows if v is not None))
    matrix = np.stack([v if v is not None else np.zeros(width, np.float32) for v in rows])
    kept, copies = fold(matrix, have, threshold)
    for position, count in zip(kept, copies, strict=True):
        hits[position].duplicates += count
    return [hits[position] for position in kept]


def fold(
    vectors: npt.NDArray[np.float32], have: npt.NDArray[np.bool_], threshold: float
) -> tuple[list[int], list[int]]:
    """Near-duplicate folding over ranked rows: (positions kept, in order; copies folded into each). A row folds
    into the kept row it is most similar to when that cosine reaches `threshold`; rows without a vector
    (`have` False) are kept and never folded. One Gram matrix; the loop runs only when some pair folds."""
    n = len(vectors)
    if int(have.sum()) < 2:
        return list(range(n)), [0] * n
    gram = _gram(vectors)
    close = gram >= threshold
    if not have.all():
        close &= have[:, None] & have[None, :]
    np.fill_diagonal(close, False)  # (a pair shows on one side at least; the loop below reads the lower one)
    if not close.any():  # no two hits are copies (most pages): nothing to fold
        return list(range(n)), [0] * n
    kept: list[int] = []
    copies: list[int] = []
    kept_rows: list[int] = []  # kept positions that have a vector
    kept_at: list[int] = []  # their place in `kept`
    for position in range(n):
        if have[position] and kept_rows:
            cosines = gram[position, kept_rows]
            best = int(np.argmax(cosines))
            if float(cosines[best]) >= threshold:
                copies[kept_at[best]] += 1
                continue
        if have[position]:
            kept_rows.append(position)
            kept_at.append(len(kept))
        kept.append(position)
        copies.append(0)
    return kept, copies


def _gram(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Every pairwise dot product of the rows. numpy hands `a @ a.T` to BLAS's syrk, which took 26 us for a page's
    21 x 1152 rows where two gemm products of the row halves take 13 (2x up to 32 rows, slower from ~44: measured,
    BENCHMARKS.md issue 22, "Round 5"). The loop in `fold` reads a row's cosines with earlier rows from one half,
    so a last-bit difference between the halves' two values of a pair changes nothing."""
    if not 2 <= len(vectors) <= GRAM_HALVES_MAX:
        return np.asarray(vectors @ vectors.T, np.float32)
    half = len(vectors) // 2
    return np.concatenate((vectors[:half] @ vectors.T, vectors[half:] @ vectors.T))


def distinct_from_query(
    ids: Sequence[int],
    vectors: dict[int, npt.NDArray[np.float32]],
    threshold: float,
    query_vector: npt.NDArray[np.float32] | None = None,
    scores: dict[int, float] | None = None,
) -> list[int]:
    """The ids that are neither a copy of the query nor a copy of an earlier id (for summaries' similar cases).

    A match is a copy of the query when its cosine with the query vector, or else its search score, reaches
    the threshold.
    """
    kept: list[int] = []
    for image_id in ids:
        vector = vectors.get(image_id)
        if query_vector is not None and vector is not None:
            if float(np.dot(query_vector, vector)) >= threshold:
                continue
        elif scores is not None and scores.get(image_id, -1.0) >= threshold:
            continue
        if vector is not None and any(
            float(np.dot(vectors[k], vector)) >= threshold for k in kept if vectors.get(k) is not None
        ):
            continue
        kept.append(image_id)
    return kept


@dataclass
class DuplicateSet:
    """Images whose vectors are practically identical; `ids` sorted, the lowest (first indexed) first."""

    ids: list[int]
    min_cosine: float


def find_sets(
    catalog: Catalog, index: VectorIndexLike, threshold: float, neighbours: int = NEIGHBOURS
) -> list[DuplicateSet]:
    """Every set of near-duplicates in the collection: each stored vector's nearest neighbours from the index,
    confirmed with the stored vectors, joined transitively (a set larger than `neighbours` still comes out
    whole, because its members see each other)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            parent[i] = parent.get(parent[i], parent[i])
            i = parent[i]
        return i

    pairs: dict[tuple[int, int], float] = {}
    for ids, vecs in catalog.iter_vectors():
        for image_id, vector in zip(ids.tolist(), vecs, strict=True):
            scores, found = index.search(vector, min(neighbours + 1, index.ntotal))
            close = [
                int(j)
                for s, j in zip(scores[0], found[0], strict=True)
                if j >= 0 and j != image_id and s >= threshold - 1e-3
            ]
            if not close:
                continue
            exact = catalog.vectors(close)
            for other, other_vector in exact.items():
                cosine = float(np.dot(vector, other_vector))
                if cosine >= threshold:
                    a, b = sorted((image_id, other))
                    pairs[(a, b)] = cosine
                    ra, rb = root(a), root(b)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, set[int]] = {}
    for a, b in pairs:
        members.setdefault(root(a), set()).update((a, b))
    lowest: dict[int, float] = {}
    for (a, _b), cosine in pairs.items():
        lowest[root(a)] = min(cosine, lowest.get(root(a), 1.0))
    sets = [DuplicateSet(ids=sorted(group), min_cosine=lowest[key]) for key, group in members.items()]
    return sorted(sets, key=lambda s: s.ids[0])


class VectorIndexLike(Protocol):
    """What find_sets needs from a vector index."""

    @property
    def ntotal(self) -> int: ...

    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: npt.NDArray[np.int64] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
