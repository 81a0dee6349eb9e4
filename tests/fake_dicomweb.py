"""A DICOMweb-like ingest source without a server: N small real DICOMs with their own UIDs, built on demand."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom

from retrieval.sources.base import SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.store.repo import Catalog

UID_ROOT = "1.2.826.0.1.3680043.10.4242"  # made-up UIDs, one per instance number


class FakeDicomweb:
    """Plans `count` "dicomweb" instances; `fetch` builds each one's bytes only when asked (as WADO-RS would send
    them) and records how far fetching ran ahead of what the runner reported written (`most_ahead`)."""

    def __init__(self, template: Path, count: int, junk: bool = False) -> None:
        self.template = pydicom.dcmread(template)
        self.count = count
        self.junk = junk  # bytes of the same size that are no image: every decode fails fast, nothing is encoded
        self.fetched = 0
        self.written = 0
        self.most_ahead = 0

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """Every instance not indexed yet."""
        refs = [SourceRef(f"fake://{i}", 0, 0.0, "dicomweb", f"fake://{i}") for i in range(self.count)]
        done = catalog.indexed_sources([r.uri for r in refs])
        todo: list[SourceRef | SourceProblem] = [r for r in refs if r.uri not in done]
        return todo, len(refs) - len(todo)

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Each instance's Part 10 bytes, built now."""
        for ref in refs:
            if isinstance(ref, SourceProblem):
                yield problem_item(ref)
                continue
            t0 = time.perf_counter()
            data = self._instance(int(ref.location.removeprefix("fake://")))
            self.fetched += 1
            self.most_ahead = max(self.most_ahead, self.fetched - self.written)
            fetched = SourceRef(ref.uri, len(data), 0.0, "dicomweb", ref.location)
            yield SourceItem(fetched, data, read_seconds=time.perf_counter() - t0)

    def _instance(self, number: int) -> bytes:
        ds = self.template
        ds.SOPInstanceUID = f"{UID_ROOT}.{number + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return b"\0" * len(buffer.getvalue()) if self.junk else buffer.getvalue()

    def close(self) -> None:
        """Nothing is held open."""

    # the progress sink of the run: it tells the source how many instances were written
    def start(self, total: int) -> None:
        """Nothing to draw."""

    def advance(self, sources: int, images: int) -> None:
        """Sources written (or recorded as failed) so far."""
        self.written += sources

    def finish(self) -> None:
        """Nothing to draw."""
