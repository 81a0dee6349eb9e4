"""The local executor: decode in a pool of worker processes, encode in this process with the collection's encoder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from indexer.job import IndexSummary, Job
from indexer.stages.batch import Decoded, Outcome, PreparedBatch
from indexer.stages.decode import DecodePool
from indexer.stages.encode import encode_pixel_batch
from retrieval.encoders.base import Encoder
from retrieval.sources.base import SourceItem
from retrieval.sources.read import release


class LocalExecutor:
    """`workers` decode processes (0: decode inline) a window ahead of the one encoder the runner feeds."""

    reads = True  # decode workers read files, archive members and spooled instances; the rest arrive as bytes

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: DecodePool | None = None
        self.encoder: Encoder | None = None
        self.batch_size = 1
        self.width = 0

    def new_summary(self) -> IndexSummary:
        """A plain summary: one encoder, timed by the runner."""
        return IndexSummary()

    def start(self, job: Job) -> None:
        """Start the decode workers (they get the config once each); encode with the runner's loaded encoder."""
        self.encoder, self.width, self.batch_size = job.encoder, job.width, job.options.batch_size
        self.pool = DecodePool(self.workers, job.config, prefetch=job.options.batch_size * 2)

    def process(self, items: Iterator[SourceItem]) -> Iterator[Outcome]:
        """Decoded sources as the pool finishes them (a source that failed to read is handed back at once)."""
        assert self.pool is not None, "start() first"
        for item in items:
            if item.code:
                yield Outcome(Decoded(item.ref, code=item.code, reason=item.reason))
                continue
            for decoded in self.pool.submit(item.ref, item.data):
                yield Outcome(decoded)
        for decoded in self.pool.drain():
            yield Outcome(decoded)

    def encode(self, batch: PreparedBatch, outcomes: Sequence[Outcome]) -> npt.NDArray[np.float32]:
        """Embed the frames the batch kept, `batch_size` per forward pass."""
        assert self.encoder is not None, "start() first"
        return encode_pixel_batch(self.encoder, batch.pixel_values(), self.batch_size, self.width)

    def close(self) -> None:
        """Stop the decode workers (and close what an inline decode left open here)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        release()
