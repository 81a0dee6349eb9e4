"""Relevance feedback: move a query towards liked and away from unliked images (Rocchio on unit vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import BadQueryError, NotFoundError
from retrieval.query import QueryVector

# The classic SMART weights (Rocchio 1971; Salton & Buckley 1990): keep the query, add 3/4 of the liked centroid,
# subtract a little of the unliked one (negative feedback helps less and is noisier than positive feedback).
ALPHA = 1.0
BETA = 0.75
GAMMA = 0.15
MAX_MARKS = 100  # liked, and separately unliked, ids per request
MAX_WEIGHT = 10.0


@dataclass(frozen=True)
class Weights:
    """Rocchio weights: alpha on the base query, beta on the liked centroid, gamma on the unliked centroid.

    alpha and beta are above 0 (a base or liked images that count for nothing would be a pointless request), gamma
    may be 0 (ignore the unliked images' direction; they are still never returned)."""

    alpha: float = ALPHA
    beta: float = BETA
    gamma: float = GAMMA

    def check(self) -> None:
        """Refuse weights outside (0, MAX_WEIGHT] (alpha, beta) or [0, MAX_WEIGHT] (gamma)."""
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            low_ok = value >= 0.0 if name == "gamma" else value > 0.0
            if not (low_ok and value <= MAX_WEIGHT):
                low = "0" if name == "gamma" else "above 0"
                raise BadQueryError(f"{name} must be {low} and at most {MAX_WEIGHT:g} (got {value:g})")


def rocchio(
    base: npt.NDArray[np.float32] | None,
    liked: npt.NDArray[np.float32],
    unliked: npt.NDArray[np.float32],
    weights: Weights = Weights(),
) -> npt.NDArray[np.float32]:
    """normalise(alpha*base + beta*mean(liked) - gamma*mean(unliked)); a missing base or an empty set adds nothing.

    `liked` and `unliked` are (n, d) arrays of unit vectors (n may be 0). Raises BadQueryError when the result
    has no direction (nothing to add, or the terms cancel out).
    """
    terms = ((weights.alpha, base), (weights.beta, liked), (weights.gamma, unliked))
    present = [(w, a) for w, a in terms if a is not None and a.size]
    if not present:
        raise BadQueryError("relevance feedback needs at least one liked image or a base query (text or image id)")
    # only the weights' ratios matter (the sum is normalised): scaling them to a largest of 1 keeps a tiny weight
    # such as 1e-300 from underflowing to a zero vector
    scale = max(w for w, _ in present) or 1.0
    total = np.zeros(present[0][1].shape[-1], dtype=np.float64)
    if base is not None:
        total += (weights.alpha / scale) * base.astype(np.float64)
    if len(liked):
        total += (weights.beta / scale) * liked.astype(np.float64).mean(axis=0)
    if len(unliked):
        total -= (weights.gamma / scale) * unliked.astype(np.float64).mean(axis=0)
    norm = float(np.linalg.norm(total))
    if not norm > 1e-9:
        raise BadQueryError("the feedback query has no direction: its terms cancel out (change the weights or marks)")
    return (total / norm).astype(np.float32)


def check_marks(like: Sequence[int], unlike: Sequence[int], has_base: bool) -> None:
    """Refuse an empty request or too many marks (before any model call). An id both liked and unliked counts in
    both means (the page never sends one)."""
    if not like and not has_base:
        raise BadQueryError("relevance feedback needs at least one liked image or a base query (text or image id)")
    for name, ids in (("like", like), ("unlike", unlike)):
        if len(ids) > MAX_MARKS:
            raise BadQueryError(f"at most {MAX_MARKS} {name} ids per request (got {len(ids)})")


def _stored(collection: Collection, ids: Sequence[int]) -> npt.NDArray[np.float32]:
    vectors = collection.catalog.vectors(ids)
    missing = sorted({i for i in ids if i not in vectors})
    if missing:
        raise NotFoundError(f"no indexed image with id {', '.join(map(str, missing))} (in the feedback marks)")
    if not ids:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([vectors[i] for i in dict.fromkeys(ids)])


def feedback_query(
    collection: Collection,
    like: Sequence[int],
    unlike: Sequence[int] = (),
    *,
    base: QueryVector | None = None,
    weights: Weights = Weights(),
) -> QueryVector:
    """The Rocchio query from stored vectors of the marked images (no model needed) and an optional base query
    (a text from retrieval.query.embed_text, an indexed image from embed_id). The marked images and the base
    image are excluded from the results; a text base still gives hits their calibrated text score. An id listed
    twice in one set counts once (the marks are sets)."""
    check_marks(like, unlike, base is not None)
    weights.check()
    liked = _stored(collection, like)
    unliked = _stored(collection, unlike)
    vector = rocchio(None if base is None else base.vector, liked, unliked, weights)
    exclude = frozenset(like) | frozenset(unlike)
    if base is not None and base.image_id is not None:
        exclude |= {base.image_id}
    if base is not None:
        exclude |= base.exclude_ids  # a case base (an indexed series or study): its own images
    text_vector = None if base is None else base.vector if base.kind == "text" else base.text_vector
    return QueryVector(
        vector=vector,
        kind="feedback",
        patient_hash=base.patient_hash if base is not None else None,
        study_uid=base.study_uid if base is not None else None,
        identify=None if base is None else base.identity,  # a search by id's base reads its identity lazily
        text_vector=text_vector,
        exclude_ids=exclude,
    )
