"""Durable spool of C-STORE-received instances, and the background worker that indexes it in batches (the spool as
an ingest source, its plan and reads, is retrieval/sources/received.py)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from indexer.pipeline import IndexOptions, IndexSummary, run_source
from indexer.quarantine import Quarantine
from indexer.series_gate import SeriesGate
from retrieval.collection import Collection
from retrieval.errors import IndexBusyError
from retrieval.fsutil import fsync_dir, private_dir, publish_new
from retrieval.render import SIZES, cached_png
from retrieval.sources.base import SourceRef
from retrieval.sources.received import SpoolSource, copy_uri, keep_for_presets
from retrieval.store.repo import FailureRecord

log = logging.getLogger(__name__)
SUFFIX = ".dcm"
EVERYTHING = 10**9  # the gate looks at every spooled file (a series waiting must not hide the files behind it)


class Spool:
    """A folder of received instances: each one written to a temp file, fsynced, renamed, directory fsynced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        private_dir(folder)  # received instances carry patient names
        for stale in folder.glob(".*.tmp"):  # never acknowledged: the sender got no success for these
            stale.unlink(missing_ok=True)

    def put(self, data: bytes) -> Path:
        """Persist one instance durably under a fresh name (arrival time + random: never taken from what the sender
        put in a UID, so no sender can make it hidden, invalid or colliding); only then may the sender be told it
        was stored."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        final = self.folder / f"{name}{SUFFIX}"
        # never over another spooled file: a re-sent SOP UID may carry other content, and both were acknowledged
        stored = publish_new(data, final, lambda: self.folder / f"{name}.{uuid.uuid4().hex[:12]}{SUFFIX}")
        assert stored is not None  # with a fallback name it is always stored
        return stored

    def pending(self, limit: int) -> list[Path]:
        """The oldest spooled instances first (whatever their names: older versions named some `.UID.dcm`)."""
        files = list(self.folder.glob(f"*{SUFFIX}"))
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return files[:limit]

    def remove(self, files: Sequence[Path]) -> None:
        """Delete indexed instances (after their rows were committed)."""
        for path in files:
            path.unlink(missing_ok=True)
        fsync_dir(self.folder)


class SpoolWorker:
    """Indexes the spool in batches (taking the writer lock per batch), caches renderings, then deletes the
    indexed files and moves the ones that failed, with their reason, into the quarantine folder.

    A volume's slices stay spooled until their series has been quiet for `quiet_seconds` (MEDSEARCH_SERIES_QUIET_
    SECONDS), then the whole series is planned at once; single images go at once."""

    def __init__(
        self,
        collection: Collection,
        spool: Spool,
        options: IndexOptions,
        batch: int,
        poll_seconds: float,
        quiet_seconds: float = 0.0,
    ) -> None:
        self.collection = collection
        self.spool = spool
        self.options = options
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.gate = SeriesGate(quiet_seconds)
        self.indexed = 0
        self.quarantine = Quarantine(spool.folder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drain_once(self) -> int:
        """Index one batch; returns how many spooled files it consumed (0: nothing to do, or busy)."""
        files = self.gate.ready(self.spool.pending(EVERYTHING), self.batch)
        if not files:
            return 0
        settings = self.collection.settings
        source = SpoolSource.one_copy_each(files, settings.max_file_bytes, settings.data_dir)
        try:
            summary = run_source(self.collection, source, self.options)
        except IndexBusyError:
            log.info("another process holds the writer lock; the spool waits")
            return 0
        self.indexed += summary.indexed
        log.info(
            "indexed %d images from %d received instances (%d skipped by sampling, %d excluded from their volume, "
            "%d duplicates, %d failed)",
            summary.indexed,
            len(source.files),
            summary.sampled_out,
            summary.excluded,
            summary.duplicates,
            summary.failed,
        )
        self._cache_renderings(source, {failure.uri for failure in summary.failures})
        kept = self._quarantine_failed(source, summary)
        planned = [f for f in source.files if f not in kept]
        source.keep_headers(planned)  # a series that grows later is re-planned with these slices' facts
        self.spool.remove(planned)  # rows are committed: the files may go (unsampled ones too: never kept)
        return len(source.files)

    def _quarantine_failed(self, source: SpoolSource, summary: IndexSummary) -> set[Path]:
        """Keep the bytes of every copy that failed, with its own failure record (one per copy, keyed by
        `copy_uri`, so a copy of the same instance that was indexed neither hides nor shares it); never delete
        what we acknowledged."""
        failed = {failure.uri: failure for failure in summary.failures}
        forget: list[str] = []
        own: dict[Path, FailureRecord] = {}
        for path, ref in zip(source.files, source.refs, strict=True):
            uri = copy_uri(ref, path)
            failure = failed.get(ref.uri)
            if failure is None:
                forget.append(uri)  # indexed (or a duplicate) now: an earlier failure of this copy is over
                continue
            if uri != ref.uri:
                forget.append(ref.uri)  # recorded under the instance's URI by the run: now under the copy's
            own[path] = FailureRecord(uri, failure.code, failure.reason)
        self.collection.catalog.replace_failures(forget, list(own.values()))
        for path, failure in own.items():
            if self.quarantine.keep(path, failure.uri, failure.code, failure.reason):
                log.warning("a received instance could not be indexed; kept in quarantine [%s]", failure.code)
        return set(own)

    def _cache_renderings(self, source: SpoolSource, failed: set[str]) -> None:
        """Before the spooled files go: cache each image's renderings, and keep a CT image's de-identified pixels
        (its window presets then render without a PACS)."""
        by_uri = {r.uri: r for r in source.refs if isinstance(r, SourceRef) and r.uri not in failed}
        settings = self.collection.settings
        for image in self.collection.catalog.images_by_source(list(by_uri)):
            try:
                data = source.read(by_uri[image.source_uri])
                for kind in SIZES:
                    cached_png(image, kind, settings, data)
                keep_for_presets(image.source_uri, image.modality, data, settings)
            except Exception as exc:  # a rendering problem must not keep the instance spooled forever
                log.warning("could not cache renderings of image %d: %s", image.id, type(exc).__name__)

    def run(self) -> None:
        """Drain, then poll, until stopped."""
        while not self._stop.is_set():
            try:
                consumed = self.drain_once()
            except Exception as exc:  # keep the files and try again later (database down, disk full...)
                log.error("spool batch failed, will retry: %s: %s", type(exc).__name__, exc)
                consumed = 0
            if consumed == 0:
                self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Run in a background thread."""
        self._thread = threading.Thread(target=self.run, name="spool-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
