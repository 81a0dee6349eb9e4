"""The indexing pipeline: composes the stages plan/read (sources) -> decode -> encode -> write for one run."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from indexer.stages.batch import Decoded, PreparedBatch
from indexer.stages.decode import DecodeConfig, DecodePool
from indexer.stages.encode import encode_pixel_batch
from indexer.stages.write import Writer
from retrieval.collection import Collection
from retrieval.encoders.base import Encoder
from retrieval.imaging.types import DecodeLimits, FramePolicy
from retrieval.labels import Labels
from retrieval.sources.base import IngestSource, SourceItem, SourceProblem, SourceRef
from retrieval.sources.files import PathSource
from retrieval.store.repo import FailureRecord

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
    not_images: dict[str, int] = field(default_factory=dict)  # skipped non-image objects by SOP class name

    def count_not_images(self, by_class: dict[str, int]) -> None:
        """Add a write's skipped non-image objects (structured reports, RT plans, ECGs...) to the run's."""
        for name, count in by_class.items():
            self.not_images[name] = self.not_images.get(name, 0) + count

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


class _Run:
    """Composes the stages for one run: groups decoded sources into batches, encodes and writes each batch."""

    def __init__(
        self, collection: Collection, options: IndexOptions, summary: IndexSummary, progress: Progress | None
    ) -> None:
        self.options = options
        self.summary = summary
        self.progress = progress
        self.encoder = collection.load_encoder()
        index = collection.require_index()
        self.width = index.width
        self.writer = Writer(collection, index, options.labels)
        self.batch = PreparedBatch()
        self.frames_pending = 0

    def add(self, decoded: Decoded) -> None:
        self.summary.stage_seconds["read"] += decoded.read_seconds
        if decoded.prepared is not None:
            self.summary.stage_seconds["decode"] += decoded.prepared.timings.get("decode", 0.0)
            self.summary.stage_seconds["preprocess"] += decoded.prepared.timings.get("preprocess", 0.0)
            self.frames_pending += decoded.frame_count
            self.summary.decoded += decoded.frame_count
        self.batch.items.append(decoded)
        if self.frames_pending >= self.options.batch_size or len(self.batch.items) >= 256:
            self.flush()

    def flush(self) -> None:
        if not self.batch.items:
            return
        batch = self.writer.new_only(self.batch)
        self.batch, self.frames_pending = PreparedBatch(), 0
        t0 = time.perf_counter()
        vectors = encode_pixel_batch(self.encoder, batch.pixel_values(), self.options.batch_size, self.width)
        t1 = time.perf_counter()
        written = self.writer.write(batch, vectors)
        self.summary.stage_seconds["encode"] += t1 - t0
        self.summary.stage_seconds["write"] += time.perf_counter() - t1
        self.summary.duplicates += written.duplicates
        self.summary.indexed += written.indexed
        self.summary.failed += len(written.failures)
        self.summary.failures.extend(written.failures)
        self.summary.count_not_images(written.not_images)
        if self.progress:
            self.progress.advance(written.sources, written.indexed)
        self.writer.save_if_due()


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
        run = _Run(collection, options, summary, progress)  # loads the model: a mismatch fails here
        pool: DecodePool | None = None
        try:
            refs = plan(collection, source, summary, progress)
            if refs:
                config = decode_config(collection, run.encoder, options)
                pool = DecodePool(options.workers, config, prefetch=options.batch_size * 2)
                _feed(source.fetch(refs), pool, run, summary)
        finally:
            source.close()
            if pool is not None:
                pool.close()
            run.writer.save()
            if progress:
                progress.finish()
    summary.seconds = time.perf_counter() - start
    apply_labels(collection, options.labels)
    return summary


def plan(
    collection: Collection, source: IngestSource, summary: IndexSummary, progress: Progress | None
) -> list[SourceRef | SourceProblem]:
    """What this run must process (sources already done are counted as skipped and shown as progress)."""
    refs, summary.skipped = source.plan(collection.catalog)
    summary.sources = len(refs) + summary.skipped
    if progress:
        progress.start(summary.sources)
        if summary.skipped:
            progress.advance(summary.skipped, 0)
    return refs


def decode_config(collection: Collection, encoder: Encoder, options: IndexOptions) -> DecodeConfig:
    """What every decode worker needs: the encoder's image processor and the collection's limits."""
    settings = collection.settings
    limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_file_bytes)
    return DecodeConfig(encoder.image_processor, options.frames, limits, settings.ct_window, settings.max_file_bytes)


def apply_labels(collection: Collection, labels: Labels | None) -> None:
    """Labels given on this run reach images indexed earlier too."""
    if labels:
        as_pairs = {k: (v.label, v.report) for k, v in labels.by_uid.items()}
        by_uri = {k: (v.label, v.report) for k, v in labels.by_uri.items()}
        collection.catalog.apply_labels(as_pairs, by_uri)


def _feed(items: Iterator[SourceItem], pool: DecodePool, run: _Run, summary: IndexSummary) -> None:
    for item in items:
        summary.stage_seconds["read"] += item.read_seconds
        if item.code:
            run.add(Decoded(item.ref, code=item.code, reason=item.reason))
            continue
        for decoded in pool.submit(item.ref, item.data):
            run.add(decoded)
    for decoded in pool.drain():
        run.add(decoded)
    run.flush()
