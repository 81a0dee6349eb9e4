"""`medsearch index/pull --ray`: plan on the driver, decode and embed on a Ray cluster, write on the driver."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.pipeline import IndexOptions, IndexSummary, Progress, apply_labels, decode_config, plan
from indexer.ray_workers import DecodeActor, EncodeActor, pack, unpack_decoded
from indexer.stages.batch import Decoded, PreparedBatch
from indexer.stages.decode import DecodeConfig
from indexer.stages.write import Writer
from retrieval.collection import Collection
from retrieval.errors import ClusterError, MedsearchError
from retrieval.optional import require
from retrieval.sources.base import IngestSource, SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.sources.files import PathSource

log = logging.getLogger(__name__)
WORKER_READS = ("file", "zip", "tar")  # kinds a worker reads itself (same paths on every machine)
ACTOR_RESTARTS = 3  # a killed actor is restarted and its batch re-run this often, then the run fails
CPU_ACTORS_DEFAULT = 2


@dataclass
class RayOptions:
    """Where and how wide to run: cluster address (None: a local instance), actor counts (None: from resources)."""

    address: str | None = None
    actors: int | None = None
    decoders: int | None = None
    device: str | None = None  # the encoder actors' device (None: the collection's setting)


@dataclass
class ActorStats:
    """What one encoder actor process did."""

    images: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Throughput while computing."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RayIndexSummary(IndexSummary):
    """An IndexSummary plus the cluster's shape, its start-up time and each encoder actor's throughput."""

    actors: dict[str, ActorStats] = field(default_factory=dict)
    encoder_actors: int = 0
    decode_actors: int = 0
    gpus: int = 0
    startup_seconds: float = 0.0

    @property
    def encoder_busy(self) -> float:
        """Fraction of wall time the encoder actors were computing, averaged over the actors."""
        if self.seconds <= 0 or not self.encoder_actors:
            return 0.0
        return self.stage_seconds["encode"] / self.seconds / self.encoder_actors


def run_index_ray(
    collection: Collection,
    paths: Sequence[Path],
    options: IndexOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: Progress | None = None,
) -> RayIndexSummary:
    """`run_index` on a Ray cluster: same planning, rows, failures and resumability."""
    source = PathSource(paths, collection.settings.max_file_bytes)
    return run_source_ray(collection, source, options, ray_options, progress)


def run_source_ray(
    collection: Collection,
    source: IngestSource,
    options: IndexOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: Progress | None = None,
) -> RayIndexSummary:
    """Index what a source yields: decode actors -> encoder actors (Ray Data) -> the driver's one Writer."""
    options = options or IndexOptions()
    ray_options = ray_options or RayOptions()
    summary = RayIndexSummary()
    start = time.perf_counter()
    with collection.writer_lock():
        encoder = collection.load_encoder()  # checks (or records) the fingerprint; actors must match it
        writer = Writer(collection, collection.require_index(), options.labels)
        try:
            refs = plan(collection, source, summary, progress)  # exactly as `index` plans
            if refs:
                config = decode_config(collection, encoder, options)
                started_ray = _connect(ray_options)
                try:
                    rows = _rows(source, refs)
                    outputs = _execute(rows, config, collection, encoder.fingerprint.key, options, ray_options, summary)
                    _write_all(outputs, writer, options.batch_size, summary, progress, start)
                finally:
                    if started_ray:
                        require("ray", "indexing on a Ray cluster", "ray").shutdown()
        finally:
            source.close()
            writer.save()
            if progress:
                progress.finish()
    summary.seconds = time.perf_counter() - start
    apply_labels(collection, options.labels)
    return summary


def _connect(ray_options: RayOptions) -> bool:
    """Join the cluster at the address, or start a local instance with a CPU slot for every encoder actor and
    at least one for decoding (slots may outnumber cores); True when this call started Ray."""
    address = ray_options.address
    ray = require("ray", "indexing on a Ray cluster", "ray")
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            cpus = os.cpu_count() or 1
            slots = max(cpus, (ray_options.actors or CPU_ACTORS_DEFAULT) + 1)
            ray.init(num_cpus=slots, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterError(f"could not start or join {where}: {exc}") from exc
    return True


def _rows(source: IngestSource, refs: list[SourceRef | SourceProblem]) -> list[dict[str, Any]]:
    """One row per planned source: the ref for files and archive members (workers read them), else the
    bytes the source fetched on the driver (DICOMweb), or the problem to record."""
    fetched = iter(source.fetch([r for r in refs if not _worker_reads(r)]))
    rows: list[dict[str, Any]] = []
    for pos, ref in enumerate(refs):
        if isinstance(ref, SourceProblem):
            item = problem_item(ref)
        elif ref.kind in WORKER_READS:
            item = SourceItem(ref)
        else:
            item = next(fetched)
        rows.append({"pos": pos, "item": pack(item)})
    return rows


def _worker_reads(ref: SourceRef | SourceProblem) -> bool:
    return isinstance(ref, SourceProblem) or ref.kind in WORKER_READS


def _shape(ray_options: RayOptions) -> tuple[int, int, int]:
    """(encoder actors, decode actors, GPUs per encoder actor) for the cluster's resources."""
    ray = require("ray", "indexing on a Ray cluster", "ray")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    actors = ray_options.actors or (gpus if gpus else CPU_ACTORS_DEFAULT)
    per_gpu = 1 if gpus else 0
    if per_gpu and actors > gpus:
        raise ClusterError(f"{actors} encoder actors asked for, but the cluster has {gpus} GPUs (one each)")
    decoders = ray_options.decoders or max(1, cpus - actors)
    return actors, decoders, per_gpu


def _execute(
    rows: list[dict[str, Any]],
    config: DecodeConfig,
    collection: Collection,
    key: str,
    options: IndexOptions,
    ray_options: RayOptions,
    summary: RayIndexSummary,
) -> Iterator[dict[str, Any]]:
    """The Ray Data pipeline over the planned rows, yielding encoded batches in plan order."""
    ray_data = require("ray.data", "indexing on a Ray cluster", "ray")
    context = ray_data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the first copy of an instance wins, as in `index`
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    actors, decoders, gpus = _shape(ray_options)
    summary.encoder_actors, summary.decode_actors, summary.gpus = actors, decoders, gpus * actors
    restarts = {"max_restarts": ACTOR_RESTARTS, "max_task_retries": ACTOR_RESTARTS}  # Ray's default: forever
    encoder_settings = collection.settings
    if ray_options.device:
        encoder_settings = encoder_settings.model_copy(update={"device": ray_options.device})
    with warnings.catch_warnings():  # max_restarts has no named parameter yet; Ray's default (forever) won't do
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = ray_data.from_items(rows, override_num_blocks=max(1, min(len(rows), decoders * 4)))
        dataset = dataset.map_batches(
            DecodeActor,
            fn_constructor_kwargs={"config": config},
            batch_size=2,
            batch_format="numpy",
            compute=ray_data.ActorPoolStrategy(size=decoders),
            num_cpus=0,  # it only hands sources to decode tasks (one CPU each) and waits
            **restarts,
        )
        dataset = dataset.map_batches(
            EncodeActor,
            fn_constructor_kwargs={"settings": encoder_settings, "expected_key": key, "batch_size": options.batch_size},
            batch_size=options.batch_size,
            batch_format="numpy",
            compute=ray_data.ActorPoolStrategy(size=actors),
            num_gpus=gpus or None,
            num_cpus=1,
            **restarts,
        )
    t0 = time.perf_counter()
    first = True
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if first:
                summary.startup_seconds, first = time.perf_counter() - t0, False
            yield batch
    except MedsearchError:
        raise
    except Exception as exc:  # a RayTaskError wraps what an actor raised: say what it was, without the trace
        cause = _cause(exc)
        if isinstance(cause, MedsearchError):
            raise cause from None
        raise ClusterError(f"the Ray pipeline failed: {type(cause).__name__}: {str(cause).splitlines()[0]}") from exc


def _cause(exc: BaseException) -> BaseException:
    """The innermost exception Ray wrapped (an actor's ModelMismatchError, for example)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _write_all(
    outputs: Iterator[dict[str, Any]],
    writer: Writer,
    batch_size: int,
    summary: RayIndexSummary,
    progress: Progress | None,
    start: float,
) -> None:
    """Write encoded sources in plan order, once each (a batch Ray re-ran after an actor died is seen once)."""
    seen: set[int] = set()
    pending: list[tuple[Decoded, np.ndarray]] = []
    frames = 0
    for batch in outputs:
        for i, pos in enumerate(batch["pos"].tolist()):
            if pos in seen:
                continue
            seen.add(pos)
            decoded = unpack_decoded(batch["decoded"][i])
            count = int(batch["frames"][i])
            width = writer.index.width
            vectors = np.frombuffer(batch["vectors"][i], dtype=np.float32).reshape(count, width)
            _account(summary, decoded, str(batch["actor"][i]), count, float(batch["seconds"][i]))
            writer.encoded_by = str(batch["encoded_by"][i])  # the actors' back end, not the driver's
            pending.append((decoded, vectors))
            frames += count
            if frames >= batch_size or len(pending) >= 256:
                _flush(pending, writer, summary, progress)
                pending, frames = [], 0
    _flush(pending, writer, summary, progress)


def _account(summary: RayIndexSummary, decoded: Decoded, actor: str, frames: int, seconds: float) -> None:
    summary.stage_seconds["read"] += decoded.read_seconds
    if decoded.prepared is not None:
        summary.stage_seconds["decode"] += decoded.prepared.timings.get("decode", 0.0)
        summary.stage_seconds["preprocess"] += decoded.prepared.timings.get("preprocess", 0.0)
        summary.decoded += frames
    summary.stage_seconds["encode"] += seconds
    stats = summary.actors.setdefault(actor, ActorStats())
    stats.images += frames
    stats.seconds += seconds


def _flush(
    pending: list[tuple[Decoded, np.ndarray]], writer: Writer, summary: RayIndexSummary, progress: Progress | None
) -> None:
    """new_only then one write, exactly as the single-machine pipeline (vectors follow the frames kept)."""
    if not pending:
        return
    t0 = time.perf_counter()
    batch = writer.new_only(PreparedBatch([decoded for decoded, _ in pending]))
    kept_vectors: list[np.ndarray] = []
    for (original, vectors), kept in zip(pending, batch.items, strict=True):
        if kept.prepared is None or original.prepared is None:
            continue
        wanted = set(kept.prepared.keys)
        rows = [i for i, key in enumerate(original.prepared.keys) if key in wanted]
        kept_vectors.append(vectors[rows])
    width = writer.index.width
    vectors_kept = np.concatenate(kept_vectors) if kept_vectors else np.zeros((0, width), dtype=np.float32)
    written = writer.write(batch, vectors_kept.astype(np.float32, copy=False))
    summary.stage_seconds["write"] += time.perf_counter() - t0
    summary.duplicates += written.duplicates
    summary.indexed += written.indexed
    summary.failed += len(written.failures)
    summary.failures.extend(written.failures)
    summary.count_not_images(written.not_images)
    if progress:
        progress.advance(written.sources, written.indexed)
    writer.save_if_due()
