"""The indexing pipeline: read -> decode + preprocess (worker processes) -> encode (batched) -> write."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from indexer.labels import Labels
from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.imaging.preprocess import ImageProcessor
from retrieval.imaging.types import DecodeLimits, FramePolicy
from retrieval.prepare import PreparedImage, prepare_bytes
from retrieval.privacy import hash_patient_id
from retrieval.sources.base import IngestSource, SourceItem, SourceRef
from retrieval.sources.files import PathSource, read_file
from retrieval.store.models import Image
from retrieval.store.repo import FailureRecord, SourceRecord

log = logging.getLogger(__name__)
STAGES = ("read", "decode", "preprocess", "encode", "write")


class Progress(Protocol):
    """What the pipeline reports as it goes (the CLI draws a bar; tests may count)."""

    def start(self, total: int) -> None: ...

    def advance(self, sources: int, images: int) -> None: ...

    def finish(self) -> None: ...


@dataclass
class IndexOptions:
    """How to run an indexing job."""

    frames: FramePolicy = "middle"
    workers: int = 2
    batch_size: int = 16
    labels: Labels | None = None


@dataclass
class IndexSummary:
    """What a run did, and how fast each stage went."""

    sources: int = 0
    indexed: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    decoded: int = 0  # frames decoded (indexed + duplicates): the work the read/decode stages did
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    failures: list[FailureRecord] = field(default_factory=list)

    def images_per_second(self) -> dict[str, float]:
        """Throughput of each stage alone (images / seconds spent in it) and overall."""
        done = {"read": self.decoded, "decode": self.decoded, "preprocess": self.decoded}
        out = {s: (done.get(s, self.indexed) / t if t > 0 else 0.0) for s, t in self.stage_seconds.items()}
        out["overall"] = self.indexed / self.seconds if self.seconds > 0 else 0.0
        return out

    @property
    def encoder_busy(self) -> float:
        """Fraction of wall time the encoder was computing."""
        return self.stage_seconds["encode"] / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Outcome:
    ref: SourceRef
    prepared: PreparedImage | None = None
    code: str = ""
    reason: str = ""
    read_seconds: float = 0.0


# -- worker side -------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(
    processor: ImageProcessor, frames: FramePolicy, limits: DecodeLimits, ct_window: str, max_bytes: int
) -> None:
    _WORKER.update(processor=processor, frames=frames, limits=limits, ct_window=ct_window, max_bytes=max_bytes)


def _work(ref: SourceRef, data: bytes | None) -> _Outcome:
    t0 = time.perf_counter()
    try:
        if data is None:
            data = read_file(Path(ref.uri), _WORKER["max_bytes"])
        read_seconds = time.perf_counter() - t0
        prepared = prepare_bytes(
            data,
            _WORKER["processor"],
            frames=_WORKER["frames"],
            limits=_WORKER["limits"],
            ct_window=_WORKER["ct_window"],
        )
        return _Outcome(ref, prepared, read_seconds=read_seconds)
    except MedsearchError as exc:
        return _Outcome(ref, code=exc.code, reason=str(exc))
    except Exception as exc:  # a decoder bug must cost one file, never the run
        return _Outcome(ref, code="internal_error", reason=f"{type(exc).__name__}: {exc}")


# -- main side ---------------------------------------------------------------------------------
class _Writer:
    """Groups outcomes, encodes them in batches and writes each group in one transaction."""

    def __init__(
        self, collection: Collection, options: IndexOptions, summary: IndexSummary, progress: Progress | None
    ) -> None:
        self.collection = collection
        self.options = options
        self.summary = summary
        self.progress = progress
        self.encoder = collection.encoder
        self.index = collection.require_index()
        self.outcomes: list[_Outcome] = []
        self.frames_pending = 0
        self.seen_keys: set[str] = set()
        self.last_save = time.monotonic()

    def add(self, outcome: _Outcome) -> None:
        self.summary.stage_seconds["read"] += outcome.read_seconds
        if outcome.prepared is not None:
            self.summary.stage_seconds["decode"] += outcome.prepared.timings.get("decode", 0.0)
            self.summary.stage_seconds["preprocess"] += outcome.prepared.timings.get("preprocess", 0.0)
            self.frames_pending += len(outcome.prepared.keys)
            self.summary.decoded += len(outcome.prepared.keys)
        self.outcomes.append(outcome)
        if self.frames_pending >= self.options.batch_size or len(self.outcomes) >= 256:
            self.flush()

    def flush(self) -> None:
        if not self.outcomes:
            return
        outcomes, self.outcomes, self.frames_pending = self.outcomes, [], 0
        keys = [k for o in outcomes if o.prepared for k in o.prepared.keys]
        existing = self.collection.catalog.existing_keys(keys) | self.seen_keys
        rows: list[Image] = []
        values: list[npt.NDArray[np.float32]] = []
        sources: list[SourceRecord] = []
        failures: list[FailureRecord] = []
        for outcome in outcomes:
            ref = outcome.ref
            if outcome.prepared is None:
                failures.append(FailureRecord(ref.uri, outcome.code, outcome.reason))
                sources.append(SourceRecord(ref.uri, ref.size, ref.mtime, "failed"))
                continue
            new = 0
            for i, key in enumerate(outcome.prepared.keys):
                if key in existing:
                    self.summary.duplicates += 1
                    continue
                existing.add(key)
                self.seen_keys.add(key)
                rows.append(self._row(outcome, i, key))
                values.append(outcome.prepared.pixel_values[i])
                new += 1
            sources.append(SourceRecord(ref.uri, ref.size, ref.mtime, "indexed", new))
        vectors = self._encode(values)
        t0 = time.perf_counter()
        stored = self.collection.catalog.write_batch(list(zip(rows, vectors, strict=True)), sources, failures)
        # None: a writer on another machine sharing the database stored that instance first
        kept = [i for i, image_id in enumerate(stored) if image_id is not None]
        ids = [stored[i] for i in kept]
        self.index.add(np.asarray(ids, dtype=np.int64), vectors[kept])
        self.summary.stage_seconds["write"] += time.perf_counter() - t0
        self.summary.duplicates += len(stored) - len(ids)
        self.summary.indexed += len(ids)
        self.summary.failed += len(failures)
        self.summary.failures.extend(failures)
        if self.progress:
            self.progress.advance(len(outcomes), len(ids))
        if time.monotonic() - self.last_save >= self.collection.settings.index_save_seconds:
            self.save()

    def _encode(self, values: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        width = self.index.width
        if not values:
            return np.zeros((0, width), dtype=np.float32)
        t0 = time.perf_counter()
        size = self.options.batch_size
        parts = [self.encoder.encode_pixel_values(np.stack(values[i : i + size])) for i in range(0, len(values), size)]
        self.summary.stage_seconds["encode"] += time.perf_counter() - t0
        return np.concatenate(parts).astype(np.float32)

    def _row(self, outcome: _Outcome, i: int, key: str) -> Image:
        assert outcome.prepared is not None
        meta = outcome.prepared.meta
        entry = self.options.labels.lookup(meta.sop_instance_uid, outcome.ref.uri) if self.options.labels else None
        return Image(
            instance_key=key,
            kind=meta.kind,
            sop_instance_uid=meta.sop_instance_uid,
            sop_class_uid=meta.sop_class_uid,
            study_instance_uid=meta.study_instance_uid,
            series_instance_uid=meta.series_instance_uid,
            frame=outcome.prepared.frames[i],
            number_of_frames=meta.number_of_frames,
            modality=meta.modality,
            body_part=meta.body_part,
            view_position=meta.view_position,
            study_date=meta.study_date,
            sex=meta.sex,
            age=meta.age,
            manufacturer=meta.manufacturer,
            rows=meta.rows,
            columns=meta.columns,
            photometric=meta.photometric,
            transfer_syntax=meta.transfer_syntax,
            window=meta.window,
            patient_hash=hash_patient_id(meta.patient_id, self.collection.salt),
            source_uri=outcome.ref.uri,
            content_hash=meta.content_hash,
            label=entry.label if entry else None,
            report=entry.report if entry else None,
        )

    def save(self) -> None:
        self.collection.save_index()
        self.last_save = time.monotonic()


def run_index(
    collection: Collection,
    paths: Sequence[Path],
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexSummary:
    """Index every file under `paths`; resumable, idempotent, one writer at a time."""
    return run_source(collection, PathSource(paths, collection.settings.max_file_bytes), options, progress)


def run_source(
    collection: Collection,
    source: IngestSource,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexSummary:
    """Index everything a source yields: same decode, encode, write, duplicate and failure handling for all."""
    options = options or IndexOptions()
    summary = IndexSummary()
    start = time.perf_counter()
    with collection.writer_lock():
        writer = _Writer(collection, options, summary, progress)  # loads the model: a mismatch fails here
        pool: _DecodePool | None = None
        try:
            refs, summary.skipped = source.plan(collection.catalog)
            summary.sources = len(refs) + summary.skipped
            if progress:
                progress.start(summary.sources)
                if summary.skipped:
                    progress.advance(summary.skipped, 0)
            if refs:
                settings = collection.settings
                limits = DecodeLimits(max_pixels=settings.max_pixels)
                processor = writer.encoder.image_processor
                initargs = (processor, options.frames, limits, settings.ct_window, settings.max_file_bytes)
                pool = _DecodePool(options.workers, initargs, prefetch=options.batch_size * 2)
                _feed(source.fetch(refs), pool, writer, summary)
        finally:
            source.close()
            if pool is not None:
                pool.close()
            writer.save()
            if progress:
                progress.finish()
    summary.seconds = time.perf_counter() - start
    if options.labels:
        as_pairs = {k: (v.label, v.report) for k, v in options.labels.by_uid.items()}
        by_uri = {k: (v.label, v.report) for k, v in options.labels.by_uri.items()}
        collection.catalog.apply_labels(as_pairs, by_uri)
    return summary


def _feed(items: Iterator[SourceItem], pool: _DecodePool, writer: _Writer, summary: IndexSummary) -> None:
    for item in items:
        summary.stage_seconds["read"] += item.read_seconds
        if item.code:
            writer.add(_Outcome(item.ref, code=item.code, reason=item.reason))
            continue
        for outcome in pool.submit(item.ref, item.data):
            writer.add(outcome)
    for outcome in pool.drain():
        writer.add(outcome)
    writer.flush()


CRASH_REASON = "the decoder crashed its worker process on this file (killed by a signal or out of memory)"


class _DecodePool:
    """Decode + preprocess in worker processes with a bounded window; survives a worker that dies."""

    def __init__(self, workers: int, initargs: tuple[Any, ...], prefetch: int = 0) -> None:
        self.workers = workers
        self.initargs = initargs
        self.executor = _executor(workers, initargs)
        if self.executor is None:
            _init_worker(*initargs)
        self.inflight: deque[tuple[SourceRef, bytes | None, Future[_Outcome] | _Outcome]] = deque()
        # keep a full encoder batch or two decoding ahead, so the encoder never waits for its next batch
        self.window = max(2, workers * 4, prefetch)

    def submit(self, ref: SourceRef, data: bytes | None) -> Iterator[_Outcome]:
        """Queue one source; yields finished outcomes (in order) whenever the window is full."""
        item = _work(ref, data) if self.executor is None else self.executor.submit(_work, ref, data)
        self.inflight.append((ref, data, item))
        while len(self.inflight) >= self.window:
            yield from self._pop()

    def drain(self) -> Iterator[_Outcome]:
        """Every outcome still in flight."""
        while self.inflight:
            yield from self._pop()

    def _pop(self) -> Iterator[_Outcome]:
        ref, data, item = self.inflight.popleft()
        if not isinstance(item, Future):
            yield item
            return
        try:
            yield item.result()
        except BrokenProcessPool:
            # A worker died (decoder crash, OOM killer). Every file in flight is a suspect: retry each
            # alone in a fresh process, so only a file that kills a worker by itself is recorded as failed.
            suspects = [(ref, data), *((r, d) for r, d, _ in self.inflight)]
            self.inflight.clear()
            log.warning("a decode worker died; retrying %d in-flight files one by one", len(suspects))
            self._restart()
            solo = _executor(1, self.initargs)
            try:
                for suspect, suspect_data in suspects:
                    assert solo is not None
                    try:
                        yield solo.submit(_work, suspect, suspect_data).result()
                    except BrokenProcessPool:  # this file alone kills a worker
                        yield _Outcome(suspect, code="worker_crashed", reason=CRASH_REASON)
                        solo.shutdown(wait=False, cancel_futures=True)
                        solo = _executor(1, self.initargs)
            finally:
                if solo is not None:
                    solo.shutdown(wait=True, cancel_futures=True)

    def _restart(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = _executor(self.workers, self.initargs)

    def close(self) -> None:
        """Stop the worker processes."""
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def _executor(workers: int, initargs: tuple[Any, ...]) -> ProcessPoolExecutor | None:
    if workers <= 0:
        return None
    context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=initargs)
