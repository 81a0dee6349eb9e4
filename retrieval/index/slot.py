"""The one place a collection's current vector index lives: swapped whole, the old one closed after its readers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from retrieval.index.base import VectorIndex


class IndexSlot:
    """Holds the current index; a swap is one assignment under a mutex, never a wait for readers.

    Readers that keep using an index over several calls (a search that widens and re-asks) hold a lease on it;
    a swap hands new readers the new index at once, and the old one is closed when its last lease ends (at the
    swap itself when nobody holds one). Opening and reconciling the new index happens before, outside the slot.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._current: VectorIndex | None = None
        self._leases: dict[int, int] = {}  # id(index) -> readers holding it
        self._retired: dict[int, VectorIndex] = {}  # swapped out, waiting for their last reader

    @property
    def current(self) -> VectorIndex | None:
        """The index new readers get (None before a model is recorded, and after close)."""
        return self._current

    @contextmanager
    def lease(self) -> Iterator[VectorIndex | None]:
        """The current index, kept open until the block ends even if it is swapped out meanwhile."""
        with self._mutex:
            index = self._current
            if index is not None:
                self._leases[id(index)] = self._leases.get(id(index), 0) + 1
        try:
            yield index
        finally:
            if index is not None:
                self._release(index)

    def _release(self, index: VectorIndex) -> None:
        with self._mutex:
            left = self._leases[id(index)] - 1
            if left:
                self._leases[id(index)] = left
                return
            del self._leases[id(index)]
            retired = self._retired.pop(id(index), None)
        if retired is not None:
            retired.close()

    def swap(self, new: VectorIndex | None) -> None:
        """Make `new` (opened and reconciled already) the current index; close the old one once unleased."""
        with self._mutex:
            old, self._current = self._current, new
            if old is None or old is new:
                return
            if self._leases.get(id(old)):
                self._retired[id(old)] = old
                return
        old.close()

    def retired(self) -> int:
        """Swapped-out indexes still open for their readers (for tests and the stats report)."""
        with self._mutex:
            return len(self._retired)
