"""Indexing on this machine: the runner with the local executor (decode worker processes, one encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from indexer.executors import build_executor
from indexer.job import STAGES, IndexOptions, IndexSummary, Progress
from indexer.runner import run
from retrieval.collection import Collection
from retrieval.sources.base import IngestSource
from retrieval.sources.files import PathSource

__all__ = [
    "STAGES",
    "IndexOptions",
    "IndexSummary",
    "Progress",
    "run_index",
    "run_source",
]


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
    return run(collection, source, build_executor(options), options, progress)
