"""A new source kind is added by registering it: planned, read by the decode workers and re-read, no edits elsewhere."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from indexer.pipeline import IndexOptions, run_source
from retrieval.collection import Collection
from retrieval.errors import InternalError
from retrieval.sources.base import SourceRef
from retrieval.sources.read import READERS, read_ref, read_source, worker_readable
from retrieval.sources.registry import unregister
from tests.conftest import testdata_file


@pytest.fixture
def memo() -> Iterator[ModuleType]:
    """The made-up kind's module, registered for this test only."""
    module = importlib.reload(importlib.import_module("tests.memo_source"))  # importing it registers the kind
    yield module
    unregister(module.KIND)


@pytest.mark.backends("sqlite-faiss")
@pytest.mark.slow  # a spawned decode worker pool
def test_a_registered_kind_is_indexed_read_by_workers_and_re_read(
    memo: ModuleType, collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reads.log"
    monkeypatch.setenv(memo.READ_LOG, str(log))  # the spawned decode worker inherits it
    summary = run_source(collection, memo.MemoSource(["CT_small.dcm", "MR_small.dcm"]), IndexOptions(workers=1))
    assert (summary.indexed, summary.failed) == (2, 0)
    readers = log.read_text().split()
    assert len(readers) == 2 and str(os.getpid()) not in readers  # read in the decode worker, not here
    uri = f"{memo.KIND}:CT_small.dcm"
    assert [image.source_uri for image in collection.catalog.images_by_source([uri])] == [uri]
    again = read_source(uri, collection.settings)  # renderings and presets re-read by the URI's scheme
    assert again == testdata_file("CT_small.dcm").read_bytes()


def test_unregistering_forgets_the_kind_and_its_scheme(memo: ModuleType) -> None:
    assert memo.KIND in READERS
    unregister(memo.KIND)
    assert memo.KIND not in READERS
    with pytest.raises(InternalError, match="no source kind 'memo' is registered"):
        worker_readable(SourceRef("memo:x", 0, 0.0, memo.KIND, "memo:x"))


def test_a_kind_without_a_local_reader_is_fetched_by_its_source() -> None:
    url = "http://pacs.invalid/dicom-web/studies/1/series/2/instances/3"
    ref = SourceRef(url, 0, 0.0, "dicomweb", url)
    assert not worker_readable(ref)
    with pytest.raises(InternalError, match="read by their source's fetch"):
        read_ref(ref, 10)
