"""What every ingest source plans and yields: plain, picklable references, items and problems."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from retrieval.store.repo import Catalog


@dataclass(frozen=True)
class SourceRef:
    """Where one file's bytes live; `uri` is its stable identity (archive members: 'archive!/member')."""

    uri: str
    size: int
    mtime: float
    kind: Literal["file", "zip", "tar", "dicomweb", "cstore"]
    container: str
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
    """One source ready for decoding: its bytes (None: the decode worker reads the file), or why not."""

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


def problem_item(problem: SourceProblem) -> SourceItem:
    """A source that could not even be read, as an item the pipeline records as failed."""
    return SourceItem(SourceRef(problem.uri, 0, 0.0, "file", problem.uri), code=problem.code, reason=problem.reason)
