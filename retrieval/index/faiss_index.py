"""Exact FAISS inner-product index keyed by image id, saved atomically and reconciled with the store."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from retrieval.fsutil import fsync_dir
from retrieval.index.base import ReconcileReport
from retrieval.store.repo import Catalog, IdArray


class FaissIndex:
    """IndexIDMap2 over IndexFlatIP: exact cosine search on unit vectors, ids are image ids."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = Path(path)
        self.width = width
        self._lock = threading.RLock()
        self._index = self._empty()
        self.dirty = False

    def _empty(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.width))

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> IdArray:
        """Ids currently in the index, sorted."""
        with self._lock:
            return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def add(self, ids: IdArray, vectors: npt.NDArray[np.float32]) -> None:
        """Add unit vectors under the given ids."""
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.shape[1] != self.width:
            raise ValueError(f"vector width {vecs.shape[1]} does not match index width {self.width}")
        with self._lock:
            self._index.add_with_ids(vecs, np.ascontiguousarray(ids, dtype=np.int64))
            self.dirty = True

    def remove(self, ids: IdArray) -> int:
        """Remove ids; returns how many were present."""
        if len(ids) == 0:
            return 0
        with self._lock:
            removed = int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))  # type: ignore[arg-type]
            self.dirty = self.dirty or removed > 0
            return removed

    def search(
        self, query: npt.NDArray[np.float32], k: int, candidates: IdArray | None = None
    ) -> tuple[npt.NDArray[np.float32], IdArray]:
        """Top-k by inner product for each query row, optionally restricted to candidate ids."""
        q = np.ascontiguousarray(query.reshape(-1, self.width), dtype=np.float32)
        with self._lock:
            k = max(1, min(k, self.ntotal if candidates is None else len(candidates)))
            if self.ntotal == 0 or (candidates is not None and len(candidates) == 0):
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            if candidates is None:
                scores, ids = self._index.search(q, k)
            else:
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(candidates, dtype=np.int64))
                scores, ids = self._index.search(q, k, params=faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
        return scores.astype(np.float32), ids.astype(np.int64)

    def save(self) -> None:
        """Write to a temporary file, fsync, rename over the old file, fsync the folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
            try:
                faiss.write_index(self._index, tmp)
                with open(tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
                fsync_dir(self.path.parent)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self.dirty = False

    def rebuild(self, catalog: Catalog) -> int:
        """Rebuild from the stored vectors (no re-embedding)."""
        with self._lock:
            self._index = self._empty()
            for ids, vecs in catalog.iter_vectors():
                self.add(ids, vecs)
            self.dirty = True
            return self.ntotal

    def reconcile(self, catalog: Catalog) -> ReconcileReport:
        """Load the saved file and make it agree with the store: top up, drop extras, or rebuild."""
        loaded = rebuilt = False
        with self._lock:
            if self.path.exists():
                try:
                    index = faiss.read_index(str(self.path))
                    if index.d == self.width and isinstance(index, faiss.IndexIDMap2):
                        self._index, loaded = index, True
                except RuntimeError:
                    loaded = False
            store_ids = catalog.all_ids()
            if not loaded:
                self.rebuild(catalog)
                rebuilt = True
                return ReconcileReport(False, True, len(store_ids), 0, self.ntotal)
            added, removed = self.sync(catalog, store_ids)
            return ReconcileReport(loaded, rebuilt, added, removed, self.ntotal)

    def sync(self, catalog: Catalog, store_ids: IdArray | None = None) -> tuple[int, int]:
        """Make the in-memory index hold exactly the store's vectors: (added, removed)."""
        with self._lock:
            store_ids = catalog.all_ids() if store_ids is None else store_ids
            have = self.ids()
            extra = np.setdiff1d(have, store_ids, assume_unique=True)
            missing = np.setdiff1d(store_ids, have, assume_unique=True)
            removed = self.remove(extra)
            added = 0
            for ids, vecs in catalog.iter_vectors(missing.tolist()):
                self.add(ids, vecs)
                added += len(ids)
            return added, removed
