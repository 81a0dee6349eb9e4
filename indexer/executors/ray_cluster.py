"""The Ray executor: decode tasks and encoder actors on a Ray cluster, fed as a stream with a bounded window."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from indexer.executors.ray_start import start_local
from indexer.job import IndexSummary, Job
from indexer.stages.batch import Decoded, Outcome, PreparedBatch
from indexer.stages.encode import kept_vectors
from retrieval.errors import ClusterError, MedsearchError
from retrieval.optional import require
from retrieval.sources.base import SourceItem

log = logging.getLogger(__name__)
ACTOR_RESTARTS = 3  # a killed actor is restarted and its batch re-run this often, then the run fails
CPU_ACTORS_DEFAULT = 2
BATCHES_PER_ACTOR = 2  # encode calls in flight per actor: one computing, one queued behind it
DECODES_PER_DECODER = 2  # decode tasks in flight per decode slot (--ray-decoders)


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

    def count_encoded(self, worker: str, frames: int, seconds: float) -> None:
        """Encode time of the cluster, and per actor process (a restarted actor is a new process)."""
        super().count_encoded(worker, frames, seconds)
        stats = self.actors.setdefault(worker, ActorStats())
        stats.images += frames
        stats.seconds += seconds


class RayExecutor:
    """Decode tasks (one CPU each, anywhere) feed encoder actors; only vectors and metadata come back.

    The driver holds at most `decoders * 2` decode tasks and `actors * 2` encode batches in flight, so its memory
    does not grow with the number of sources, and results come back in plan order (first copy wins, as locally).
    """

    reads = True  # decode tasks read files and archive members (same paths on every machine): no bytes via the driver

    def __init__(self, options: RayOptions) -> None:
        self.options = options
        self.summary = RayIndexSummary()
        self.started_ray = False
        self.actors: list[Any] = []
        self.ray: Any = None
        self.width = 0

    def new_summary(self) -> RayIndexSummary:
        """The summary this executor fills in with the cluster's shape and the actors' throughput."""
        self.summary = RayIndexSummary()
        return self.summary

    def start(self, job: Job) -> None:
        """Join (or start) the cluster and start the encoder actors; they load the model while decoding begins."""
        self.started_ray = _connect(self.options)
        self.ray = ray = require("ray", "indexing on a Ray cluster", "ray")
        from indexer.executors.ray_actors import DECODE_RETRIES, EncodeActor, decode_task

        actors, decoders, gpus = _shape(self.options)
        summary = self.summary
        summary.encoder_actors, summary.decode_actors, summary.gpus = actors, decoders, gpus * actors
        settings = job.collection.settings
        if self.options.device:
            settings = settings.model_copy(update={"device": self.options.device})
        remote_actor = ray.remote(
            num_cpus=1, num_gpus=gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS
        )(EncodeActor)
        key = job.encoder.fingerprint.key
        self.actors = [remote_actor.remote(settings, key, job.options.batch_size) for _ in range(actors)]
        self.decode = ray.remote(num_cpus=1, max_retries=DECODE_RETRIES, retry_exceptions=False)(decode_task)
        self.config = ray.put(job.config)
        self.batch_size = max(1, job.options.batch_size)
        self.decoding_cap = max(1, decoders * DECODES_PER_DECODER)
        self.width = job.width

    def process(self, items: Iterator[SourceItem]) -> Iterator[Outcome]:
        """Outcomes in plan order; a batch of `batch_size` sources goes to the next actor in turn."""
        t0 = time.perf_counter()
        inflight: deque[Any] = deque()  # encode calls, oldest first
        decoding: list[Any] = []  # decode tasks not known to be finished
        parts: list[tuple[Any, Any]] = []
        turn = 0
        try:
            for item in items:
                if item.code:
                    parts.append((item.ref, Decoded(item.ref, code=item.code, reason=item.reason)))
                else:
                    decoding = self._room(decoding)
                    task = self.decode.remote(item, self.config)
                    decoding.append(task)
                    parts.append((item.ref, task))
                del item  # the bytes now belong to the object store
                if len(parts) >= self.batch_size:
                    inflight.append(self.actors[turn % len(self.actors)].encode.remote(parts))
                    parts, turn = [], turn + 1
                    while len(inflight) > len(self.actors) * BATCHES_PER_ACTOR:
                        yield from self._collect(inflight.popleft(), t0)
            if parts:
                inflight.append(self.actors[turn % len(self.actors)].encode.remote(parts))
            while inflight:
                yield from self._collect(inflight.popleft(), t0)
        except MedsearchError:
            raise
        except Exception as exc:  # a RayTaskError wraps what an actor raised: say what it was, without the trace
            cause = _cause(exc)
            if isinstance(cause, MedsearchError):
                raise cause from None
            name = type(cause).__name__
            raise ClusterError(f"the Ray pipeline failed: {name}: {str(cause).splitlines()[0]}") from exc

    def _room(self, decoding: list[Any]) -> list[Any]:
        """Wait until fewer than the cap of decode tasks are running (without fetching their results)."""
        while len(decoding) >= self.decoding_cap:
            _, decoding = self.ray.wait(decoding, num_returns=1, fetch_local=False)
        return decoding

    def _collect(self, call: Any, t0: float) -> Iterator[Outcome]:
        outcomes = self.ray.get(call)
        if not self.summary.startup_seconds:
            self.summary.startup_seconds = time.perf_counter() - t0
        yield from outcomes

    def encode(self, batch: PreparedBatch, outcomes: Sequence[Outcome]) -> npt.NDArray[np.float32]:
        """The actors' vectors of the frames the batch kept (nothing is encoded twice, nothing here)."""
        empty = np.zeros((0, self.width), dtype=np.float32)
        vectors = [o.vectors if o.vectors is not None else empty for o in outcomes]
        return kept_vectors([o.decoded for o in outcomes], batch, vectors, self.width)

    def close(self) -> None:
        """Stop the actors (their CPU and GPU slots go back to the cluster); stop Ray if this run started it."""
        if self.ray is None:
            return
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()


def _connect(options: RayOptions) -> bool:
    """Join the cluster at the address, or start a local instance with a CPU slot for every encoder actor and
    at least one for decoding (slots may outnumber cores); True when this call started Ray."""
    address = options.address
    ray = require("ray", "indexing on a Ray cluster", "ray")
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            cpus = os.cpu_count() or 1
            start_local(max(cpus, (options.actors or CPU_ACTORS_DEFAULT) + 1), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterError(f"could not start or join {where}: {exc}") from exc
    return True


def _shape(options: RayOptions) -> tuple[int, int, int]:
    """(encoder actors, decode slots, GPUs per encoder actor) for the cluster's resources."""
    ray = require("ray", "indexing on a Ray cluster", "ray")
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    actors = options.actors or (gpus if gpus else CPU_ACTORS_DEFAULT)
    per_gpu = 1 if gpus else 0
    if per_gpu and actors > gpus:
        raise ClusterError(f"{actors} encoder actors asked for, but the cluster has {gpus} GPUs (one each)")
    decoders = options.decoders or max(1, cpus - actors)
    return actors, decoders, per_gpu


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
