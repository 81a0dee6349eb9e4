"""What every ingest source plans and yields: plain, picklable references, items and problems."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from retrieval.errors import MedsearchError

if TYPE_CHECKING:
    from retrieval.imaging.series import Header
    from retrieval.store.repo import Catalog


PROBLEM_KIND = "problem"  # the ref of an item that failed before any read: nothing reads it


@dataclass(frozen=True)
class SourceRef:
    """One planned source. `uri`: its stable identity in the store (archive members: 'archive!/member').
    `kind`: its registered kind (retrieval/sources/registry.py), which says who reads it. `location`: where its
    bytes are for every kind (a file's path, the archive's path, a WADO-RS URL, a spooled file's path).
    `member`: the path inside the archive at `location`, for archive members only (None for every other kind)."""

    uri: str
    size: int
    mtime: float
    kind: str
    location: str
    member: str | None = None
    frames: tuple[int, ...] = ()  # 1-based frames series planning sampled from a multi-frame object (): policy


@dataclass(frozen=True)
class SourceProblem:
    """A member or path that cannot be read at all (recorded as a failure)."""

    uri: str
    code: str
    reason: str


@dataclass
class SourceItem:
    """One source ready for decoding: its bytes (None: the decode worker reads them through the registry), or
    why not."""

    ref: SourceRef
    data: bytes | None = None
    code: str = ""
    reason: str = ""
    read_seconds: float = 0.0


class IngestSource(Protocol):
    """Where a run's images come from: folders and archives, a DICOMweb server, the C-STORE spool."""

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """What to process in this run, and how many sources were left out as already done."""
        ...

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Each planned source with its bytes (or its failure), in order."""
        ...

    def close(self) -> None:
        """Release whatever the source holds open."""
        ...


@runtime_checkable
class PlansFromHeaders(Protocol):
    """A source whose instances' planning facts come without the plan stage reading their bytes (DICOMweb series
    metadata, the C-STORE spool), and which says how a stored member of a series it re-plans is referred to."""

    def header(self, ref: SourceRef) -> Header | None:
        """The planning facts of one of its refs (a planned one, or one `stored_ref` gave); None: not known."""
        ...

    def stored_ref(self, uri: str, size: int, mtime: float, status: str) -> SourceRef | None:
        """A source stored earlier (any status) as a ref its series can be re-planned with; None: left as it is."""
        ...


def problem_item(problem: SourceProblem) -> SourceItem:
    """A source that could not even be read, as an item the pipeline records as failed."""
    ref = SourceRef(problem.uri, 0, 0.0, PROBLEM_KIND, problem.uri)
    return SourceItem(ref, code=problem.code, reason=problem.reason)


def read_each(refs: Sequence[SourceRef | SourceProblem], read: Callable[[SourceRef], bytes]) -> Iterator[SourceItem]:
    """Each planned source read in order by `read`, timed; a problem or a failed read becomes a failed item."""
    for ref in refs:
        if isinstance(ref, SourceProblem):
            yield problem_item(ref)
            continue
        t0 = time.perf_counter()
        try:
            data = read(ref)
        except MedsearchError as exc:
            yield SourceItem(ref, code=exc.code, reason=str(exc), read_seconds=time.perf_counter() - t0)
            continue
        yield SourceItem(ref, data, read_seconds=time.perf_counter() - t0)
