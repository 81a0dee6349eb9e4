"""The one ingest runner: plan -> read -> decode -> encode -> write, its flush rule and accounting, on any executor."""

from __future__ import annotations

import time
from collections.abc import Iterator

from indexer.executors import Executor
from indexer.job import IndexOptions, IndexSummary, Job, Progress
from indexer.stages.batch import Outcome, PreparedBatch
from indexer.stages.decode import DecodeConfig
from indexer.stages.plan import Planned, work_items
from indexer.stages.plan import plan as plan_stage
from indexer.stages.write import Writer
from retrieval.collection import Collection
from retrieval.encoders.base import Encoder
from retrieval.imaging.types import DecodeLimits
from retrieval.labels import Labels
from retrieval.sources.base import IngestSource, SourceItem
from retrieval.sources.read import modules

MAX_BATCH_SOURCES = 256  # a batch is written once it holds batch_size frames or this many sources (failures too)


def run(
    collection: Collection,
    source: IngestSource,
    executor: Executor,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexSummary:
    """Index everything a source yields on an executor: resumable, idempotent, one writer at a time.

    Every executor gets the same planning, batches, duplicate and failure handling, periodic index saves and
    final save, so a run's rows do not depend on where decoding and encoding happened.
    """
    options = options or IndexOptions()
    summary = executor.new_summary()
    start = time.perf_counter()
    with collection.writer_lock():
        encoder = collection.load_encoder()  # checks (or records) the fingerprint: a mismatch fails here
        index = collection.require_index()
        writer = Writer(collection, index, options.labels)
        try:
            planned = plan(collection, source, writer, summary, progress, options)
            if planned:
                config = decode_config(collection, encoder, options)
                try:
                    executor.start(Job(collection, encoder, config, options, index.width))
                    batches = _Batches(executor, writer, options.batch_size, summary, progress)
                    items = _read(work_items(source, planned, executor.reads), summary)
                    for outcome in executor.process(items):
                        batches.add(outcome)
                    batches.flush()
                finally:
                    executor.close()
        finally:
            source.close()
            writer.save()
            if progress:
                progress.finish()
    summary.seconds = time.perf_counter() - start
    apply_labels(collection, options.labels)
    return summary


def plan(
    collection: Collection,
    source: IngestSource,
    writer: Writer,
    summary: IndexSummary,
    progress: Progress | None,
    options: IndexOptions,
) -> list[Planned]:
    """What this run must process, series by series (sources already done, and those planning settled without
    decoding, are counted and shown as progress). The plan's records and removals are stored before decoding."""
    planned = plan_stage(
        source, collection.catalog, options.slices(collection.settings), collection.settings.max_file_bytes
    )
    summary.skipped = planned.skipped
    summary.sampled_out, summary.excluded = planned.sampled_out, planned.excluded
    summary.removed = writer.apply_plan(planned)
    settled = len(planned.records)
    summary.sources = len(planned.refs) + summary.skipped + settled
    if progress:
        progress.start(summary.sources)
        if summary.skipped + settled:
            progress.advance(summary.skipped + settled, 0)
    return planned.refs


def decode_config(collection: Collection, encoder: Encoder, options: IndexOptions) -> DecodeConfig:
    """What every decode worker needs: the encoder's image processor and the collection's limits."""
    settings = collection.settings
    limits = DecodeLimits.of(settings)
    frames, window, max_bytes = options.frames, settings.ct_window, settings.max_file_bytes
    return DecodeConfig(
        encoder.image_processor,
        frames,
        limits,
        window,
        max_bytes,
        source_modules=modules(),
        ct_channels=settings.ct_channels,
    )


def apply_labels(collection: Collection, labels: Labels | None) -> None:
    """Labels given on this run reach images indexed earlier too."""
    if labels:
        as_pairs = {k: (v.label, v.report) for k, v in labels.by_uid.items()}
        by_uri = {k: (v.label, v.report) for k, v in labels.by_uri.items()}
        collection.catalog.apply_labels(as_pairs, by_uri)


def _read(items: Iterator[SourceItem], summary: IndexSummary) -> Iterator[SourceItem]:
    """The read stage's time on this machine (what workers read is counted with their decode)."""
    for item in items:
        summary.stage_seconds["read"] += item.read_seconds
        yield item


class _Batches:
    """Groups outcomes into batches (the flush rule), then drops known frames, encodes and writes each batch."""

    def __init__(
        self, executor: Executor, writer: Writer, batch_size: int, summary: IndexSummary, progress: Progress | None
    ) -> None:
        self.executor = executor
        self.writer = writer
        self.batch_size = batch_size
        self.summary = summary
        self.progress = progress
        self.pending: list[Outcome] = []
        self.frames = 0

    def add(self, outcome: Outcome) -> None:
        """Account for one outcome; write the batch once it holds `batch_size` frames or too many sources."""
        decoded, summary = outcome.decoded, self.summary
        summary.stage_seconds["read"] += decoded.read_seconds
        if decoded.prepared is not None:
            summary.stage_seconds["decode"] += decoded.prepared.timings.get("decode", 0.0)
            summary.stage_seconds["preprocess"] += decoded.prepared.timings.get("preprocess", 0.0)
            self.frames += decoded.frame_count
            summary.decoded += decoded.frame_count
        if outcome.worker:
            summary.count_encoded(outcome.worker, decoded.frame_count, outcome.encode_seconds)
        if outcome.encoded_by:
            self.writer.encoded_by = outcome.encoded_by  # the remote encoders' back end, not the driver's
        self.pending.append(outcome)
        if self.frames >= self.batch_size or len(self.pending) >= MAX_BATCH_SOURCES:
            self.flush()

    def flush(self) -> None:
        """new_only -> encode (or cut the vectors computed already) -> one write -> a periodic index save."""
        if not self.pending:
            return
        pending, self.pending, self.frames = self.pending, [], 0
        batch = self.writer.new_only(PreparedBatch([outcome.decoded for outcome in pending]))
        t0 = time.perf_counter()
        vectors = self.executor.encode(batch, pending)
        t1 = time.perf_counter()
        written = self.writer.write(batch, vectors)
        summary = self.summary
        summary.stage_seconds["encode"] += t1 - t0
        summary.stage_seconds["write"] += time.perf_counter() - t1
        summary.duplicates += written.duplicates
        summary.indexed += written.indexed
        summary.failed += len(written.failures)
        summary.failures.extend(written.failures)
        summary.count_not_images(written.not_images)
        summary.reports += written.reports
        if self.progress:
            self.progress.advance(written.sources, written.indexed)
        self.writer.save_if_due()
