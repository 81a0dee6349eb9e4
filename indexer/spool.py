"""Durable spool of C-STORE-received instances, and the background worker that indexes it in batches."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from indexer.pipeline import IndexOptions, IndexSummary, run_source
from indexer.quarantine import Quarantine
from retrieval.collection import Collection
from retrieval.errors import IndexBusyError, MedsearchError
from retrieval.fsutil import fsync_dir, private_dir, publish_new
from retrieval.render import SIZES, cached_png
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.sources.files import read_file
from retrieval.sources.read import received_uri
from retrieval.store.repo import Catalog

log = logging.getLogger(__name__)
SUFFIX = ".dcm"
_UID = re.compile(r"[0-9.]{1,64}")


class Spool:
    """A folder of received instances: each one written to a temp file, fsynced, renamed, directory fsynced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        private_dir(folder)  # received instances carry patient names
        for stale in folder.glob(".*.tmp"):  # never acknowledged: the sender got no success for these
            stale.unlink(missing_ok=True)

    def put(self, sop_instance_uid: str, data: bytes) -> Path:
        """Persist one instance durably (as SOP_UID.dcm, or SOP_UID.RANDOM.dcm when that name is taken); only then
        may the sender be told it was stored."""
        name = sop_instance_uid if _UID.fullmatch(sop_instance_uid) else hashlib.sha256(data).hexdigest()
        final = self.folder / f"{name}{SUFFIX}"
        # never over another spooled file: a re-sent SOP UID may carry other content, and both were acknowledged
        stored = publish_new(data, final, lambda: self.folder / f"{name}.{uuid.uuid4().hex[:12]}{SUFFIX}")
        assert stored is not None  # with a fallback name it is always stored
        return stored

    def pending(self, limit: int) -> list[Path]:
        """The oldest spooled instances first."""
        files = [p for p in self.folder.glob(f"*{SUFFIX}") if not p.name.startswith(".")]
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return files[:limit]

    def remove(self, files: Sequence[Path]) -> None:
        """Delete indexed instances (after their rows were committed)."""
        for path in files:
            path.unlink(missing_ok=True)
        fsync_dir(self.folder)


def _ref(path: Path) -> SourceRef | SourceProblem:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        # optional here as in `medsearch index`: some senders' instances lack the study or series UID
        study, series = (str(header.get(k) or "") for k in ("StudyInstanceUID", "SeriesInstanceUID"))
        uids = (study, series, str(header.get("SOPInstanceUID") or path.stem))
    except Exception as exc:
        return SourceProblem(f"spool:{path.name}", "decode_error", f"received instance unreadable: {exc}")
    stat = path.stat()
    return SourceRef(received_uri(*uids), stat.st_size, stat.st_mtime, "cstore", str(path))


class SpoolSource:
    """Spooled files as a pipeline source: every one is processed (duplicates are dropped by SOP UID + frame)."""

    def __init__(self, files: Sequence[Path], max_bytes: int) -> None:
        self.files = list(files)
        self.max_bytes = max_bytes
        self.refs: list[SourceRef | SourceProblem] = []

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """Every spooled file, identified by its UIDs."""
        self.refs = [_ref(path) for path in self.files]
        return list(self.refs), 0

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """The spooled bytes, as received."""
        for ref in refs:
            if isinstance(ref, SourceProblem):
                yield problem_item(ref)
                continue
            try:
                yield SourceItem(ref, read_file(Path(ref.container), self.max_bytes))
            except MedsearchError as exc:
                yield SourceItem(ref, code=exc.code, reason=str(exc))

    def close(self) -> None:
        """Nothing is held open."""


class SpoolWorker:
    """Indexes the spool in batches (taking the writer lock per batch), caches renderings, then deletes the
    indexed files and moves the ones that failed, with their reason, into the quarantine folder."""

    def __init__(
        self, collection: Collection, spool: Spool, options: IndexOptions, batch: int, poll_seconds: float
    ) -> None:
        self.collection = collection
        self.spool = spool
        self.options = options
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.indexed = 0
        self.quarantine = Quarantine(spool.folder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def drain_once(self) -> int:
        """Index one batch; returns how many spooled files it consumed (0: nothing to do, or busy)."""
        files = self.spool.pending(self.batch)
        if not files:
            return 0
        source = SpoolSource(files, self.collection.settings.max_file_bytes)
        try:
            summary = run_source(self.collection, source, self.options)
        except IndexBusyError:
            log.info("another process holds the writer lock; the spool waits")
            return 0
        self.indexed += summary.indexed
        log.info(
            "indexed %d images from %d received instances (%d duplicates, %d failed)",
            summary.indexed,
            len(files),
            summary.duplicates,
            summary.failed,
        )
        self._cache_renderings(source)
        kept = self._quarantine_failed(source, summary)
        self.spool.remove([f for f in files if f not in kept])  # rows are committed: the files may go
        return len(files)

    def _quarantine_failed(self, source: SpoolSource, summary: IndexSummary) -> set[Path]:
        """Keep the bytes of every instance whose failure was recorded; never delete what we acknowledged."""
        paths: dict[str, list[Path]] = {}
        for path, ref in zip(source.files, source.refs, strict=True):
            paths.setdefault(ref.uri, []).append(path)
        kept: set[Path] = set()
        for failure in summary.failures:
            for path in paths.get(failure.uri, []):
                if path not in kept and self.quarantine.keep(path, failure.uri, failure.code, failure.reason):
                    log.warning("a received instance could not be indexed; kept in quarantine [%s]", failure.code)
                kept.add(path)
        return kept

    def _cache_renderings(self, source: SpoolSource) -> None:
        refs = [r for r in source.refs if isinstance(r, SourceRef)]
        by_uri = {r.uri: Path(r.container) for r in refs}
        settings = self.collection.settings
        for image in self.collection.catalog.images_by_source(list(by_uri)):
            try:
                data = read_file(by_uri[image.source_uri], settings.max_file_bytes)
                for kind in SIZES:
                    cached_png(image, kind, settings, data)
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
