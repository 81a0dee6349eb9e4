"""Plan stage: what a run must process, then its work items in order, streamed (series-aware planning goes here)."""

from __future__ import annotations

from collections.abc import Collection as Kinds
from collections.abc import Iterator

from retrieval.sources.base import IngestSource, SourceItem, SourceProblem, SourceRef, problem_item
from retrieval.store.repo import Catalog

Planned = SourceRef | SourceProblem


def plan(source: IngestSource, catalog: Catalog) -> tuple[list[Planned], int]:
    """The sources this run must process, and how many were left out as already done.

    Headers only, nothing decoded: the place where instances will be grouped into series and K slices
    sampled per volume; what it returns is all the later stages see.
    """
    return source.plan(catalog)


def work_items(source: IngestSource, planned: list[Planned], worker_reads: Kinds[str]) -> Iterator[SourceItem]:
    """One item per planned source, in plan order, fetched lazily: kinds in `worker_reads` travel as bare
    references (the executor's workers read them), every other kind is fetched here by the source as the
    items are consumed, so at most the source's own window of fetched bytes is held at a time."""
    fetched = source.fetch([r for r in planned if not _read_by_workers(r, worker_reads)])
    for ref in planned:
        if isinstance(ref, SourceProblem):
            yield problem_item(ref)
        elif ref.kind in worker_reads:
            yield SourceItem(ref)
        else:
            yield next(fetched)


def _read_by_workers(ref: Planned, worker_reads: Kinds[str]) -> bool:
    return isinstance(ref, SourceProblem) or ref.kind in worker_reads
