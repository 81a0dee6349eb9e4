"""Plan stage: what a run must process, then its work items in order, streamed (series-aware planning goes here)."""

from __future__ import annotations

from collections.abc import Iterator

from retrieval.sources.base import IngestSource, SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.sources.read import worker_readable
from retrieval.store.repo import Catalog

Planned = SourceRef | SourceProblem


def plan(source: IngestSource, catalog: Catalog) -> tuple[list[Planned], int]:
    """The sources this run must process, and how many were left out as already done.

    Headers only, nothing decoded: the place where instances will be grouped into series and K slices
    sampled per volume; what it returns is all the later stages see.
    """
    return source.plan(catalog)


def work_items(source: IngestSource, planned: list[Planned], workers_read: bool) -> Iterator[SourceItem]:
    """One item per planned source, in plan order, fetched lazily. When the executor's workers read
    (`workers_read`), a ref whose kind the registry can read anywhere travels bare and the worker reads it;
    every other ref is fetched here by the source that planned it, as the items are consumed, so at most the
    source's own window of fetched bytes is held at a time."""
    fetched = source.fetch([r for r in planned if not _bare(r, workers_read)])
    for ref in planned:
        if isinstance(ref, SourceProblem):
            yield problem_item(ref)
        elif _bare(ref, workers_read):
            yield SourceItem(ref)
        else:
            yield next(fetched)


def _bare(ref: Planned, workers_read: bool) -> bool:
    return isinstance(ref, SourceProblem) or (workers_read and worker_readable(ref))
