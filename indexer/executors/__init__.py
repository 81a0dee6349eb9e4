"""Where decode and encode run for the one ingest runner: the Executor protocol and the factory that picks one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from indexer.job import IndexOptions, IndexSummary, Job
from indexer.stages.batch import Outcome, PreparedBatch
from retrieval.sources.base import SourceItem

if TYPE_CHECKING:
    from indexer.executors.ray_cluster import RayOptions


class Executor(Protocol):
    """Runs the decode and encode stages somewhere; the runner plans, batches, writes and accounts.

    `process` turns work items into outcomes (in order, holding a bounded number in flight); `encode` gives the
    vectors of the frames a batch kept after the write stage dropped known ones, either by encoding them now
    (one local encoder) or by cutting the vectors its workers already computed (a cluster).
    """

    reads: bool  # its workers read worker-readable sources themselves (registry); else the sources fetch all

    def new_summary(self) -> IndexSummary: ...

    def start(self, job: Job) -> None: ...

    def process(self, items: Iterator[SourceItem]) -> Iterator[Outcome]: ...

    def encode(self, batch: PreparedBatch, outcomes: Sequence[Outcome]) -> npt.NDArray[np.float32]: ...

    def close(self) -> None: ...


def build_executor(options: IndexOptions, cluster: RayOptions | None = None) -> Executor:
    """Worker processes and one encoder on this machine, or a Ray cluster when its options are given."""
    if cluster is None:
        from indexer.executors.local import LocalExecutor

        return LocalExecutor(options.workers)
    from indexer.executors.ray_cluster import RayExecutor  # imports no Ray until the executor starts

    return RayExecutor(cluster)
