"""The VectorIndex protocol every vector backend implements, and what reconciling with the store did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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

    def ids(self) -> IdArray: ...

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None: ...

    def remove(self, ids: IdArray) -> int: ...

    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None
    ) -> tuple[npt.NDArray[np.float32], IdArray]: ...

    def save(self) -> None: ...

    def rebuild(self, catalog: Catalog) -> int: ...

    def reconcile(self, catalog: Catalog) -> ReconcileReport: ...

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]: ...
