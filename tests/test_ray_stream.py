"""`pull --ray` streams: the driver fetches a bounded window ahead of the writes, however many instances there are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, testdata_file

pytestmark = [
    pytest.mark.backends("sqlite-faiss"),
    pytest.mark.peers,
]  # a real local Ray; one back end is enough: this is about the driver's memory
COUNT = 240
BATCH = 4
ACTORS = 2
WINDOW = BATCH * (2 * ACTORS + 4) + 1  # encode calls in flight, the batch forming, the one being written, one more


# The run in a process of its own, as `medsearch pull --ray` runs: the product starts its own local Ray instance
# there. (In the suite's process, a second local Ray started after tests/test_ray_ingest.py shut its own down
# timed out waiting for its GCS; a user's process starts Ray once.)
RUN = """
import json, sys
from pathlib import Path
from indexer.pipeline import IndexOptions
from indexer.ray_ingest import RayOptions, run_source_ray
from retrieval.collection import Collection
from retrieval.settings import Settings
from tests.fake_dicomweb import FakeDicomweb

dicom, model, data, count, batch, actors = sys.argv[1:7]
source = FakeDicomweb(Path(dicom), int(count))
settings = Settings(data_dir=Path(data), model=model, workers=0, batch_size=8)
with Collection(settings) as collection:
    options, ray = IndexOptions(batch_size=int(batch)), RayOptions(actors=int(actors), decoders=1)
    summary = run_source_ray(collection, source, options, ray, source)
print(json.dumps({
    "summary": [summary.sources, summary.indexed, summary.failed],
    "reasons": [f.reason for f in summary.failures[:3]],
    "fetched": source.fetched, "written": source.written, "most_ahead": source.most_ahead,
}))
"""


@pytest.fixture
def ray_home() -> Iterator[Path]:
    """Ray's session files and auth token in a temporary folder (short: its socket paths must fit in 107 bytes);
    the run starts and stops its own local instance there."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_pull_on_ray_fetches_only_a_bounded_window_ahead(ray_home: Path, tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_TMPDIR": str(ray_home), "HOME": str(ray_home), "PYTHONPATH": str(REPO)}
    args = [str(testdata_file("CT_small.dcm")), str(tiny_model), str(tmp_path / "data"), str(COUNT), str(BATCH)]
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *args, str(ACTORS)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["summary"] == [COUNT, COUNT, 0], got["reasons"]
    assert got["fetched"] == got["written"] == COUNT
    # Fetching everything before Ray starts would put all COUNT instances' bytes in the driver at once.
    assert got["most_ahead"] <= WINDOW, f"{got['most_ahead']} instances fetched ahead of the writes"
