"""A small in-process LRU cache of summaries keyed by (query, matches, model)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

from retrieval.summarize.base import Summary

CacheKey = tuple[str, tuple[int, ...], str]


class SummaryCache:
    """Thread-safe LRU of finished summaries; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, Summary] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(query_key: str, match_ids: list[int], model: str) -> CacheKey:
        return (query_key, tuple(match_ids), model)

    def get(self, key: CacheKey) -> Summary | None:
        """A copy of the cached summary marked `cached=True`, or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return replace(hit, cached=True, compared_ids=list(hit.compared_ids))

    def put(self, key: CacheKey, summary: Summary) -> None:
        if self.size <= 0 or not summary.text:
            return
        with self._lock:
            self._items[key] = replace(summary, cached=False)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
