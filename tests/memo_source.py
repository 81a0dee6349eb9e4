"""A made-up source kind for tests/test_source_registry.py: "memo:NAME" is a file of the test corpora.

Importing this module registers the kind, as a real source module does (so a spawned decode worker that imports it
knows the kind too); the test imports it inside the test and unregisters the kind afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from retrieval.settings import Settings
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef
from retrieval.sources.registry import SourceKind, register
from retrieval.store.repo import Catalog
from tests.conftest import testdata_file

KIND = "memo"
READ_LOG = "SOURCE_REGISTRY_READ_LOG"  # where each read appends the reading process's id


def _read(ref: SourceRef, max_bytes: int) -> bytes:
    log = os.environ.get(READ_LOG)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    return testdata_file(ref.location.removeprefix(f"{KIND}:")).read_bytes()[:max_bytes]


def _reread(uri: str, settings: Settings) -> bytes:
    return testdata_file(uri.removeprefix(f"{KIND}:")).read_bytes()


register(SourceKind(KIND, read=_read, schemes=(KIND,), reread=_reread))


class MemoSource:
    """Plans a few corpus files under the made-up kind; never reads them itself."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """One ref per name, nothing skipped."""
        uris = [f"{KIND}:{name}" for name in self.names]
        return [SourceRef(uri, 0, 0.0, KIND, uri) for uri in uris], 0

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Never given a ref: the workers read this kind."""
        assert not refs, "a worker-readable kind must be read by the workers, not fetched by its source"
        return iter(())

    def close(self) -> None:
        """Nothing is held open."""
