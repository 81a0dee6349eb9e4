"""The series and study indexes: VectorIndex instances derived from the cases table, as the image index is from the
stored image vectors; kept in step by case revision, saved atomically next to the image index."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from retrieval.fsutil import atomic_write_text
from retrieval.index.base import ReconcileReport, VectorIndex
from retrieval.index.exact import StoredScorer
from retrieval.index.faiss_index import TEMP_PREFIX, FaissIndex
from retrieval.index.faiss_types import FaissOptions
from retrieval.settings import Settings
from retrieval.store.cases import CASE_LEVELS, CaseLevel, CaseStore
from retrieval.store.repo import Catalog, IdArray

log = logging.getLogger(__name__)


class LevelSource:
    """The cases of one level seen as a vector store (`all_ids`, `iter_vectors`): what every VectorIndex
    derives from, so FAISS and Milvus build, top up and rebuild a case index exactly as they do the image index."""

    def __init__(self, cases: CaseStore, level: CaseLevel) -> None:
        self.cases = cases
        self.level: CaseLevel = level

    def all_ids(self) -> IdArray:
        return self.cases.all_ids(self.level)

    def iter_vectors(
        self, ids: Iterable[int] | None = None, chunk: int = 4096
    ) -> Iterator[tuple[IdArray, npt.NDArray[np.float32]]]:
        return self.cases.iter_vectors(self.level, ids, chunk)

    def as_catalog(self) -> Catalog:
        """This source where an index method is typed for the Catalog (it reads only the two methods above)."""
        return cast(Catalog, self)


def build_level_index(settings: Settings, width: int, source: LevelSource) -> VectorIndex:
    """A case index of the configured back end: `series.faiss` / `study.faiss` in the data folder, or the Milvus
    collections `<name>_series` / `<name>_study`."""
    stored = StoredScorer(source)
    if settings.vector_backend == "milvus":
        from retrieval.index.milvus_index import MilvusIndex

        name = f"{settings.milvus_collection}_{source.level}"
        return MilvusIndex(settings.resolved_milvus_uri, name, width, settings.milvus_token, stored)
    path = settings.data_dir / f"{source.level}.faiss"
    return FaissIndex(path, width, FaissOptions.from_settings(settings), stored)


class CaseIndex:
    """One level's index and the newest case revision it holds (`<level>.revision` in the data folder)."""

    def __init__(self, index: VectorIndex, source: LevelSource, revision_path: Path) -> None:
        self.index = index
        self.source = source
        self.revision_path = revision_path
        self.seen = 0
        self._lock = threading.Lock()  # one catch-up at a time (searches go on: the index has its own locks)

    @property
    def level(self) -> CaseLevel:
        return self.source.level

    def open(self) -> ReconcileReport:
        """Load (or build) the index, then apply every case changed since the revision it was saved at."""
        _, newest = self.source.cases.changed_since(self.level, 0)
        report = self.index.reconcile(self.source.as_catalog())
        if report.rebuilt:
            self.seen = newest  # built from the table as it was at `newest` or later
        else:
            self.seen = self._saved_revision()
            self.catch_up()
        return report

    def _saved_revision(self) -> int:
        try:
            return int(self.revision_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def catch_up(self) -> tuple[int, int]:
        """Replace the vectors of cases changed since the last look, add new cases, drop removed ones."""
        with self._lock:
            changed, newest = self.source.cases.changed_since(self.level, self.seen)
            if len(changed) == 0 and newest == self.seen:
                return 0, 0
            self.index.remove(changed)  # their vectors changed: the sync adds them back from the table
            added, removed = self.index.sync(self.source.as_catalog())
            self.seen = newest
            return added, removed

    def save(self) -> None:
        """Save the index if it changed, then the revision it holds (an interrupted save re-applies, never skips)."""
        with self._lock:
            if self.index.dirty:
                self.index.maybe_upgrade(self.source.as_catalog())
                self.index.save()
            if self._saved_revision() != self.seen:
                atomic_write_text(self.revision_path, str(self.seen), TEMP_PREFIX)

    def rebuild(self) -> int:
        """Rebuild from the cases table (after `medsearch reindex`-style repairs)."""
        with self._lock:
            _, newest = self.source.cases.changed_since(self.level, 0)
            total = self.index.rebuild(self.source.as_catalog())
            self.seen = newest
            return total


class CaseIndexes:
    """The series and study indexes of a collection."""

    def __init__(self, settings: Settings, width: int, cases: CaseStore) -> None:
        self.levels: dict[CaseLevel, CaseIndex] = {}
        for level in CASE_LEVELS:
            source = LevelSource(cases, level)
            index = build_level_index(settings, width, source)
            self.levels[level] = CaseIndex(index, source, settings.data_dir / f"{level}.revision")

    def open(self) -> dict[str, ReconcileReport]:
        """Load and reconcile both levels."""
        return {level: case.open() for level, case in self.levels.items()}

    def __getitem__(self, level: CaseLevel) -> CaseIndex:
        return self.levels[level]

    def catch_up(self) -> None:
        """Both levels take the changes made to the cases table (by this process or another)."""
        for case in self.levels.values():
            case.catch_up()

    def save(self) -> None:
        for case in self.levels.values():
            case.save()

    def close(self) -> None:
        for case in self.levels.values():
            case.index.close()
