"""`pull --ray` streams: the driver fetches a bounded window ahead of the writes, however many instances there are."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.pipeline import IndexOptions
from indexer.ray_ingest import RayOptions, run_source_ray  # imports no Ray until a run starts
from retrieval.collection import Collection
from tests.conftest import make_settings, testdata_file
from tests.fake_dicomweb import FakeDicomweb

pytestmark = [
    pytest.mark.backends("sqlite-faiss"),
    pytest.mark.peers,
]  # a real local Ray; one back end is enough: this is about the driver's memory
COUNT = 240
BATCH = 4
ACTORS = 2
WINDOW = BATCH * (2 * ACTORS + 4) + 1  # encode calls in flight, the batch forming, the one being written, one more


@pytest.fixture
def ray_home() -> Iterator[Path]:
    """Ray's session files and auth token in a temporary folder (short: its socket paths must fit in 107 bytes);
    the run starts and stops its own local instance there."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "HOME")}
    os.environ.update(RAY_TMPDIR=str(root), HOME=str(root))
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


def test_pull_on_ray_fetches_only_a_bounded_window_ahead(ray_home: Path, tiny_model: Path, tmp_path: Path) -> None:
    source = FakeDicomweb(testdata_file("CT_small.dcm"), COUNT)
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    try:
        options = IndexOptions(batch_size=BATCH)
        summary = run_source_ray(collection, source, options, RayOptions(actors=ACTORS, decoders=1), source)
    finally:
        collection.close()
    assert (summary.sources, summary.indexed, summary.failed) == (COUNT, COUNT, 0), summary.failures[:3]
    assert source.fetched == source.written == COUNT
    # Fetching everything before Ray starts would put all COUNT instances' bytes in the driver at once.
    assert source.most_ahead <= WINDOW, f"{source.most_ahead} instances fetched ahead of the writes"
