"""`medsearch index/pull --ray`: the runner with the Ray executor (plan and write here, decode and embed on Ray)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from indexer.executors import build_executor
from indexer.executors.ray_cluster import ActorStats, RayIndexSummary, RayOptions
from indexer.job import IndexOptions, Progress
from indexer.runner import run
from retrieval.collection import Collection
from retrieval.sources.base import IngestSource
from retrieval.sources.files import PathSource

__all__ = ["ActorStats", "RayIndexSummary", "RayOptions", "run_index_ray", "run_source_ray"]


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
    """Index what a source yields: decode tasks -> encoder actors (Ray) -> the driver's one Writer, streamed."""
    options = options or IndexOptions()
    summary = run(collection, source, build_executor(options, ray_options or RayOptions()), options, progress)
    assert isinstance(summary, RayIndexSummary)
    return summary
