"""The VectorIndex protocol every vector backend implements, and what reconciling with the store did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from retrieval.store.repo import Catalog, IdArray


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
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None
    ) -> tuple[npt.NDArray[np.float32], IdArray]: ...

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

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]: ...


def sync_to_store(index: VectorIndex, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]:
    """Make `index` hold exactly the store's vectors by removing extras and adding missing: (added, removed)."""
    store_ids = catalog.all_ids() if store_ids is None else store_ids
    have = index.ids()
    extra = np.setdiff1d(have, store_ids, assume_unique=True)
    missing = np.setdiff1d(store_ids, have, assume_unique=True)
    removed = index.remove(extra)
    added = 0
    for ids, vecs in catalog.iter_vectors(missing.tolist()):
        index.add(ids, vecs)
        added += len(ids)
    return added, removed
