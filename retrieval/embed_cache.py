"""Embedding caches of the query path: a bounded LRU of text and upload embeddings, and hit/miss counts."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

V = TypeVar("V")
CacheName = Literal["lru", "indexed"]  # the in-process LRU, or an indexed image's stored vector
QueryKind = Literal["image", "text"]


@dataclass(frozen=True)
class CachedEmbedding:
    """An embedded query as the LRU keeps it: the (read-only) vector and what the query knows about itself."""

    vector: npt.NDArray[np.float32]
    patient_hash: str | None = None
    study_uid: str | None = None


def content_key(*parts: str | bytes) -> str:
    """A cache key: the SHA-256 of the parts (bytes as they are, strings as UTF-8), each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


class EmbedCache(Generic[V]):
    """A thread-safe LRU of at most `size` entries (0: off, nothing is kept), plus hit and miss counts by
    cache and query kind (read by the service's /metrics)."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits: Counter[tuple[CacheName, QueryKind]] = Counter()
        self._misses: Counter[tuple[CacheName, QueryKind]] = Counter()

    def get(self, key: str, kind: QueryKind, count_miss: bool = True) -> V | None:
        """The value kept under `key` (now the most recent), counted as an LRU hit or miss (a miss only when
        `count_miss`: a caller that looks first and embeds after counts it once); None when absent or when the
        cache is off (not counted then)."""
        if self.size == 0:
            return None
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self._misses["lru", kind] += count_miss
                return None
            self._items.move_to_end(key)
            self._hits["lru", kind] += 1
            return value

    def put(self, key: str, value: V) -> None:
        """Keep `value`, dropping the least recently used entries beyond `size`."""
        if self.size == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def count(self, cache: CacheName, kind: QueryKind, hit: bool) -> None:
        """Count a lookup made elsewhere (an indexed image's stored vector found or not)."""
        with self._lock:
            (self._hits if hit else self._misses)[cache, kind] += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def counts(self) -> tuple[dict[tuple[CacheName, QueryKind], int], dict[tuple[CacheName, QueryKind], int]]:
        """(hits, misses), each by (cache, query kind)."""
        with self._lock:
            return dict(self._hits), dict(self._misses)
