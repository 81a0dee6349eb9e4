"""The VectorIndex protocol every vector backend implements, and what reconciling with the store did."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from retrieval.store.repo import Catalog, IdArray


@dataclass
class Found:
    """One query's hits with their float vectors, in rank order: what a search hands to folding and re-scoring
    without a second lookup. `have[n]` is False for a hit whose vector the back end does not hold (its row of
    `vectors` is zeros)."""

    scores: npt.NDArray[np.float32]
    ids: IdArray
    vectors: npt.NDArray[np.float32]
    have: npt.NDArray[np.bool_]


def found_with_vectors(index: VectorIndex, scores: npt.NDArray[np.float32], ids: IdArray, with_vectors: bool) -> Found:
    """`Found` for one query row of a search result, its vectors looked up in `index` (when asked)."""
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    if not with_vectors or len(ids) == 0:
        return Found(scores, ids, np.zeros((len(ids), index.width), np.float32), np.zeros(len(ids), bool))
    held = index.vectors(ids)
    vectors = np.zeros((len(ids), index.width), np.float32)
    have = np.zeros(len(ids), bool)
    for n, image_id in enumerate(ids.tolist()):
        vector = held.get(image_id)
        if vector is not None:
            vectors[n], have[n] = vector, True
    return Found(scores, ids, vectors, have)


@dataclass
class ReconcileReport:
    """What opening the index had to do to agree with the store."""

    loaded: bool
    rebuilt: bool
    added: int
    removed: int
    total: int


class VectorIndex(Protocol):
    """The operations search and indexing need from any vector backend (ids are image ids)."""

    @property
    def width(self) -> int: ...

    @property
    def ntotal(self) -> int: ...

    @property
    def dirty(self) -> bool: ...

    @property
    def threads_used(self) -> int | None:
        """Threads the last search ran with (None before any search, or when the back end does not say)."""
        ...

    def ids(self) -> IdArray: ...

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None: ...

    def remove(self, ids: IdArray) -> int: ...

    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None, probe: float = 1.0
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """Top-k by inner product per query row (restricted to `candidates` when given); `probe`: how many times
        the lists or graph beam of its own setting an approximate back end visits (a text query asks for more)."""
        ...

    def search_vectors(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        candidates: IdArray | None = None,
        with_vectors: bool = True,
        exact_top: int | None = None,
        probe: float = 1.0,
    ) -> Found:
        """`search` for one query vector, its hits' float vectors alongside (those it re-scored with, when it
        re-scores): one pass for what folding near-duplicates needs. `exact_top`: how many of the k the caller
        shows (the rest a folding margin), for a back end that re-ranks a multiple of them (None: all k)."""
        ...

    def searchable_now(self) -> bool:
        """Whether a search now runs in this process's memory with nothing to wait for: no network round trip, no
        change to the index holding it or waiting for it (the service answers such a search on its event loop)."""
        ...

    def vectors(self, ids: IdArray) -> dict[int, npt.NDArray[np.float32]]:
        """The float vectors of these ids as the back end re-scores with them (ids it lacks are absent): what
        folding near-duplicates compares, without a read of the database where the back end holds them."""
        ...

    def save(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """Type, parameters and size, for the stats report (`params.type` names the index type)."""
        ...

    def close(self) -> None:
        """Release what the back end holds (a connection, a file); a no-op when it holds nothing."""
        ...

    def rebuild(self, catalog: Catalog, requested: str | None = None, **overrides: int | None) -> int:
        """Rebuild from the stored vectors (no re-embedding), as the `requested` type with these parameters
        where the back end has types (FAISS); others refuse a type with `bad_query`."""
        ...

    def maybe_upgrade(self, catalog: Catalog) -> bool:
        """The auto-upgrade step before a save: switch to the approximate type once the collection outgrows
        exact search (FAISS with index_type=auto); True when it rebuilt."""
        ...

    def reconcile(self, catalog: Catalog) -> ReconcileReport: ...

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]:
        """Catch up with the store (`store_delta`): what changed is read while searches go on, and applied in a
        short exclusive section; (added, removed)."""
        ...


# Vectors read per step when an index catches up with the store: a change this size is applied in one exclusive
# section (searches see it whole); a larger one is applied in steps of this many, so memory stays bounded
# (32,768 x 1152 float32 = 150 MB).
DELTA_STEP = 32768


@dataclass
class StoreDelta:
    """One step of catching up with the store: ids to remove, and missing vectors already read."""

    remove: IdArray
    add_ids: IdArray
    add_vectors: npt.NDArray[np.float32]


def store_delta(index: VectorIndex, catalog: Catalog, store_ids: IdArray | None = None) -> Iterator[StoreDelta]:
    """Compare `index` with the store and read what it lacks, changing nothing (searches go on meanwhile).

    Yields the extras to remove with the first DELTA_STEP missing vectors, then any further vectors a step at a
    time; the caller applies each step (`apply_delta`) before the next is read."""
    store_ids = catalog.all_ids() if store_ids is None else store_ids
    have = index.ids()
    extra = np.setdiff1d(have, store_ids, assume_unique=True)
    missing = np.setdiff1d(store_ids, have, assume_unique=True)
    for start in range(0, max(1, len(missing)), DELTA_STEP):
        id_parts, vec_parts = [np.zeros(0, np.int64)], [np.zeros((0, index.width), np.float32)]
        for ids, vecs in catalog.iter_vectors(missing[start : start + DELTA_STEP].tolist()):
            id_parts.append(np.asarray(ids, np.int64))
            vec_parts.append(np.asarray(vecs, np.float32).reshape(len(ids), index.width))
        yield StoreDelta(extra if start == 0 else extra[:0], np.concatenate(id_parts), np.concatenate(vec_parts))


def apply_delta(index: VectorIndex, delta: StoreDelta) -> tuple[int, int]:
    """Remove the extras and add the missing vectors (the caller holds the index alone): (added, removed)."""
    removed = index.remove(delta.remove)
    index.add(delta.add_ids, delta.add_vectors)
    return len(delta.add_ids), removed
