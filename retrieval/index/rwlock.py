"""A readers-writer lock: searches share the index, changes to it take it alone (re-entrant for the writer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SharedLock:
    """Many readers at once, or one writer; the writer may re-enter and may also read.

    FAISS searches are read-only and release the GIL, so concurrent requests can search side by side; adds,
    removals and rebuilds (which swap or mutate the index) wait until no search is running, and searches wait
    for them. A reader must not ask for the writer's side while it reads (that would wait for itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0  # writers waiting: new readers let them go first, so a busy service still syncs

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock as one of the readers."""
        me = threading.get_ident()
        with self._cond:
            while self._writer != me and (self._writer is not None or self._waiting > 0):
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def contended(self) -> bool:
        """Whether a writer holds the lock or waits for it (read without the lock: a hint, exact a moment ago)."""
        return self._writer is not None or self._waiting > 0

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone (re-entrant for the thread that holds it)."""
        me = threading.get_ident()
        with self._cond:
            self._waiting += 1
            while self._writer != me and (self._writer is not None or self._readers > 0):
                self._cond.wait()
            self._waiting -= 1
            self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()
