"""A new source kind is added by registering it: planned, read by the decode workers and re-read, no edits elsewhere."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from indexer.pipeline import IndexOptions, run_source
from retrieval.collection import Collection
from retrieval.errors import InternalError
from retrieval.settings import Settings
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef
from retrieval.sources.read import read_ref, read_source, worker_readable
from retrieval.sources.registry import SourceKind, register
from retrieval.store.repo import Catalog
from tests.conftest import testdata_file

KIND = "memo"  # a made-up source: "memo:NAME" is a file of the test corpora
READ_LOG = "SOURCE_REGISTRY_READ_LOG"  # where each read appends the reading process's id


def _read(ref: SourceRef, max_bytes: int) -> bytes:
    log = os.environ.get(READ_LOG)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    return testdata_file(ref.location.removeprefix(f"{KIND}:")).read_bytes()[:max_bytes]


def _reread(uri: str, settings: Settings) -> bytes:
    return testdata_file(uri.removeprefix(f"{KIND}:")).read_bytes()


register(SourceKind(KIND, read=_read, schemes=(KIND,), reread=_reread))  # at import, as a source module does


class MemoSource:
    """Plans a few corpus files under the made-up kind; never reads them itself."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        uris = [f"{KIND}:{name}" for name in self.names]
        return [SourceRef(uri, 0, 0.0, KIND, uri) for uri in uris], 0

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        assert not refs, "a worker-readable kind must be read by the workers, not fetched by its source"
        return iter(())

    def close(self) -> None:
        pass


@pytest.mark.backends("sqlite-faiss")
def test_a_registered_kind_is_indexed_read_by_workers_and_re_read(
    collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reads.log"
    monkeypatch.setenv(READ_LOG, str(log))  # the spawned decode worker inherits it
    summary = run_source(collection, MemoSource(["CT_small.dcm", "MR_small.dcm"]), IndexOptions(workers=1))
    assert (summary.indexed, summary.failed) == (2, 0)
    readers = log.read_text().split()
    assert len(readers) == 2 and str(os.getpid()) not in readers  # read in the decode worker, not here
    uris = sorted(image.source_uri for image in collection.catalog.images_by_source([f"{KIND}:CT_small.dcm"]))
    assert uris == [f"{KIND}:CT_small.dcm"]
    again = read_source(uris[0], collection.settings)  # renderings and presets re-read by the URI's scheme
    assert again == testdata_file("CT_small.dcm").read_bytes()


def test_an_unregistered_kind_is_a_clear_internal_error() -> None:
    ref = SourceRef("x", 0, 0.0, "nobody", "x")
    with pytest.raises(InternalError, match="no source kind 'nobody' is registered"):
        worker_readable(ref)


def test_a_kind_without_a_local_reader_is_fetched_by_its_source() -> None:
    url = "http://pacs.invalid/dicom-web/studies/1/series/2/instances/3"
    ref = SourceRef(url, 0, 0.0, "dicomweb", url)
    assert not worker_readable(ref)
    with pytest.raises(InternalError, match="read by their source's fetch"):
        read_ref(ref, 10)
