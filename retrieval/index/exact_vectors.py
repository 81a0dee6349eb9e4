"""The float32 vectors a lossy index re-scores with, in memory or memory-mapped: derived from the store like the
index (rebuilt, reconciled, saved atomically next to it), so no query reads vector blobs from the database.

float32, not float16: the re-scored order must be the brute-force order over the stored vectors (ties broken by
id), and float16 (11-bit mantissa) rounds cosines of near neighbours by ~1e-4, enough to swap them
(docs/vector-indexes.md). One `.npy` file of (id, vector) records sorted by id, so a memory map needs no second
file to agree with.
"""

from __future__ import annotations

import mmap as _mmap
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.fsutil import atomic_write
from retrieval.store.repo import IdArray

Vectors = npt.NDArray[np.float32]
POSITION_TABLE_SPARSITY = 4  # a position table up to 4 entries per held id (ids removed or skipped in between)


def record_type(width: int) -> np.dtype[Any]:
    """One stored record: the image id and its vector."""
    return np.dtype([("id", "<i8"), ("vector", "<f4", (width,))])


def release_mapped_pages(records: Any) -> None:
    """Copying the id field read every page of a mapped file (a record, 4.6 KB at width 1152, is larger than a page):
    at 1M the whole 4.6 GB then counted in the process's resident set. Hand the pages back to the page cache, so only
    the vectors queries read are mapped in again (a memory map without its private mmap object is left as it is)."""
    mapped = getattr(records, "_mmap", None)
    if isinstance(mapped, _mmap.mmap) and hasattr(_mmap, "MADV_DONTNEED"):
        mapped.madvise(_mmap.MADV_DONTNEED)


class ExactVectors:
    """Unit float32 vectors by image id: a sorted base (an array or a read-only memory map) plus the vectors added
    since it was saved, minus the ones removed since."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._base_ids: IdArray = np.zeros(0, np.int64)
        self._base: Any = np.zeros((0, width), np.float32)
        self._added: dict[int, Vectors] = {}
        self._removed: set[int] = set()
        self.mapped = False
        self.changed = True  # since it was saved or loaded (a save of an unchanged set writes nothing)
        # the base's position by id (-1: not in the base), when the ids are dense enough for a table
        self._position: npt.NDArray[np.int32] | None = None

    @classmethod
    def of(cls, width: int, ids: IdArray, vectors: Vectors) -> ExactVectors:
        """A set holding these vectors (copied, sorted by id)."""
        made = cls(width)
        order = np.argsort(ids, kind="stable")
        made._base_ids = np.ascontiguousarray(ids[order], np.int64)
        made._base = np.ascontiguousarray(vectors[order], np.float32)
        made._index_positions()
        return made

    def _index_positions(self) -> None:
        """A table of base positions by id, so a search's lookup of its proposals is one gather rather than a binary
        search of the id array per id (12 us of 65 for 84 ids at 100k). Image ids are assigned in order and mostly
        kept, so the table is ~4 bytes an image (400 KB at 100k); ids far sparser than that keep the binary search."""
        ids = self._base_ids
        top = int(ids[-1]) + 1 if len(ids) else 0
        if not len(ids) or int(ids[0]) < 0 or top > POSITION_TABLE_SPARSITY * len(ids) + 1024 or top >= 2**31:
            self._position = None
            return
        position = np.full(top, -1, np.int32)
        position[ids] = np.arange(len(ids), dtype=np.int32)
        self._position = position

    @classmethod
    def load(cls, path: Path, width: int, mmap: bool) -> ExactVectors | None:
        """The saved set, memory-mapped or read into memory; None when missing, unreadable or of another width."""
        try:
            records = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if records.dtype != record_type(width) or records.ndim != 1:
            return None
        made = cls(width)
        # a contiguous copy: every query binary-searches it, and the records' own id field is strided by a whole
        # vector (4.6 KB), which made each search step touch another page (53 us for 84 ids at 100k)
        made._base_ids = np.array(records["id"], np.int64, copy=True, order="C")
        if mmap:
            release_mapped_pages(records)
        made._base = records["vector"]
        made._index_positions()
        made.mapped = mmap
        made.changed = False
        return made

    def __len__(self) -> int:
        return len(self._base_ids) + len(self._added) - len(self._removed)

    @property
    def nbytes(self) -> int:
        """Bytes of vectors held (mapped ones are paged in by the OS as queries touch them)."""
        return (len(self._base_ids) + len(self._added)) * self.width * 4

    def ids(self) -> IdArray:
        """Every id held, sorted."""
        base = self._base_ids
        if self._removed:
            base = np.setdiff1d(base, np.fromiter(self._removed, np.int64, len(self._removed)), assume_unique=True)
        return np.union1d(base, np.fromiter(self._added, np.int64, len(self._added)))

    def add(self, ids: IdArray, vectors: Vectors) -> None:
        """Hold these vectors (an id held already gets the new vector)."""
        self.changed = self.changed or len(ids) > 0
        for image_id, vector in zip(ids.tolist(), np.asarray(vectors, np.float32), strict=True):
            self._added[image_id] = vector.copy()
            if self._in_base(image_id):
                self._removed.add(image_id)  # the base's copy is stale: `get` falls back to the added one

    def remove(self, ids: IdArray) -> None:
        """Forget these ids."""
        self.changed = self.changed or len(ids) > 0
        for image_id in ids.tolist():
            self._added.pop(image_id, None)
            if self._in_base(image_id):
                self._removed.add(image_id)

    def _in_base(self, image_id: int) -> bool:
        at = int(np.searchsorted(self._base_ids, image_id))
        return at < len(self._base_ids) and int(self._base_ids[at]) == image_id

    def _table_positions(self, ids: IdArray) -> npt.NDArray[np.int32] | None:
        """The base positions of `ids` from the position table, when there is one and every id is in the base."""
        position = self._position
        if position is None or not len(ids) or int(ids.min()) < 0 or int(ids.max()) >= len(position):
            return None
        at = position[ids]
        return at if int(at.min()) >= 0 else None

    def get(self, ids: IdArray) -> tuple[IdArray, Vectors]:
        """(the ids held among `ids`, their vectors), in the order asked."""
        ids = np.asarray(ids, np.int64)
        unchanged = not self._removed and not self._added
        at = self._table_positions(ids) if unchanged else None
        if at is not None:  # all held, nothing changed since saved (a search's hits, usually): one gather
            return ids, np.asarray(self._base[at], np.float32)
        at = np.minimum(np.searchsorted(self._base_ids, ids), max(0, len(self._base_ids) - 1))
        in_base = (self._base_ids[at] == ids) if len(self._base_ids) else np.zeros(len(ids), bool)
        if unchanged and in_base.all():  # a search's hits, usually: one gather
            return ids, np.asarray(self._base[at], np.float32)
        if self._removed:
            in_base &= ~np.isin(ids, np.fromiter(self._removed, np.int64, len(self._removed)))
        out = np.empty((len(ids), self.width), np.float32)
        out[in_base] = self._base[at[in_base]]
        keep = in_base.copy()
        if self._added:
            for n in np.flatnonzero(~in_base).tolist():
                vector = self._added.get(int(ids[n]))
                if vector is not None:
                    out[n] = vector
                    keep[n] = True
        return ids[keep], out[keep]

    def save(self, path: Path, prefix: str) -> None:
        """Write every held vector, sorted by id, as one `.npy` file replacing `path` atomically (nothing when the
        set has not changed since it was loaded or saved there: a periodic save then costs no rewrite)."""
        if not self.changed and path.exists():
            return
        ids = self.ids()

        def write(tmp: str) -> None:
            records = np.lib.format.open_memmap(tmp, mode="w+", dtype=record_type(self.width), shape=(len(ids),))
            for start in range(0, len(ids), 32768):
                part = ids[start : start + 32768]
                records["id"][start : start + len(part)] = part
                records["vector"][start : start + len(part)] = self.get(part)[1]
            records.flush()
            del records

        atomic_write(path, write, prefix)
        self.changed = False
