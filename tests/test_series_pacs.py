"""Series sampling on the PACS paths: `pull` from a real Orthanc retrieves only the sampled instances, and
`listen` fed by DCMTK storescu indexes a CT series exactly as `index` does the same files (same sampled SOP
UIDs, same vectors), keeps every acknowledged instance until its series is planned, then no unsampled one."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from retrieval.collection import Collection
from tests.commands import run
from tests.conftest import make_settings
from tests.orthanc import Orthanc, free_port, retrieved_sops, served, start_orthanc
from tests.phantoms import PhantomSeries, volume, write_series
from tests.test_dicom_senders import STORESCU
from tests.test_pacs_listen import Listener, _env, _wait_for

pytestmark = pytest.mark.peers  # a real Orthanc and DCMTK storescu (not in `make test-fast`)

K = 6  # slices sampled per volume in these tests
SLICES = 24  # the phantom's volume (plus a coronal localizer in the same series)
Vectors = dict[str, npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    folder = tmp_path_factory.mktemp("phantom") / "ct"
    return write_series(folder, volume("two_spheres", SLICES, 32), shape="two_spheres", seed=7)


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _vectors(data_dir: Path, model: Path) -> Vectors:
    """SOP Instance UID -> stored vector of every image of a collection."""
    collection = Collection(make_settings(data_dir, model))
    try:
        ids = [int(i) for i in collection.catalog.all_ids()]
        rows = collection.catalog.images(ids)
        return {str(rows[i].sop_instance_uid): v for i, v in collection.catalog.vectors(ids).items()}
    finally:
        collection.close()


def _stats(env: dict[str, str]) -> dict[str, object]:
    return dict(json.loads(run(["stats", "--json"], env).stdout))


@pytest.fixture(scope="module")
def reference(phantom: PhantomSeries, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Vectors:
    """What `medsearch index` makes of the phantom's files with K sampled slices."""
    data = tmp_path_factory.mktemp("reference") / "data"
    env = _env(data, tiny_model, MEDSEARCH_SERIES_SLICES=str(K))
    run(["index", str(phantom.files[0].parent)], env)
    vectors = _vectors(data, tiny_model)
    assert len(vectors) == K, f"index sampled {len(vectors)} slices, not {K}"
    assert _sop(phantom.localizer) not in vectors if phantom.localizer else True
    return vectors


def _same(got: Vectors, want: Vectors) -> None:
    assert set(got) == set(want)
    for sop, vector in want.items():
        np.testing.assert_allclose(got[sop], vector, atol=1e-5, err_msg=sop)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, phantom: PhantomSeries) -> Iterator[Orthanc]:
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-series"), verbose=True)
    try:
        for path in phantom.files:
            server.upload(path.read_bytes())
        yield server
    finally:
        server.stop()


def test_pull_retrieves_only_the_sampled_instances(
    orthanc: Orthanc, phantom: PhantomSeries, reference: Vectors, tiny_model: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path / "data", tiny_model, MEDSEARCH_SERIES_SLICES=str(K), COLUMNS="200")
    report = json.loads(run(["pull", "--dicomweb", orthanc.dicomweb, "--json"], env).stdout)
    assert sorted(retrieved_sops(orthanc)) == sorted(reference)  # the server sent exactly the K sampled ones
    assert len(served(orthanc, "/metadata")) == 1  # the series' headers: one metadata request, no pixels
    assert report["found"] == len(phantom.files) and report["fetched"] == K and report["indexed"] == K
    assert report["sampled_out"] == SLICES - K and report["excluded"] == 1  # the localizer
    assert report["bytes"]["instances"] > 0 and report["bytes"]["metadata"] > 0
    _same(_vectors(tmp_path / "data", tiny_model), reference)  # and indexed them as `index` does

    again = json.loads(run(["pull", "--dicomweb", orthanc.dicomweb, "--json"], env).stdout)
    assert again["fetched"] == 0 and again["indexed"] == 0  # nothing new: nothing retrieved
    assert len(retrieved_sops(orthanc)) == K


def _send(port: int, files: list[Path]) -> None:
    """One storescu association for the whole series (uncompressed, as written)."""
    proc = subprocess.run(
        [STORESCU, "-v", "-xe", "-aet", "STORESCU", "-aec", "MEDSEARCH", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    acknowledged = (proc.stdout + proc.stderr).count("Received Store Response (Success)")
    assert acknowledged == len(files), proc.stdout + proc.stderr


def _spooled(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "spool").glob("*.dcm"))


def test_listen_plans_a_quiet_series_as_index_does_and_loses_nothing_to_a_kill(
    phantom: PhantomSeries, reference: Vectors, tiny_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    port = free_port()
    waiting = _env(data, tiny_model, MEDSEARCH_SERIES_SLICES=str(K), MEDSEARCH_SERIES_QUIET_SECONDS="600")
    first = Listener({**waiting, "MEDSEARCH_SPOOL_POLL_SECONDS": "0.2"}, port, tmp_path / "first.log")
    try:
        _send(port, phantom.files)
        assert len(_spooled(data)) == len(phantom.files)  # acknowledged: all on disk, the series still arriving
        first.process.send_signal(signal.SIGKILL)  # killed before its series was planned
        first.process.wait(10)
    finally:
        first.stop()
    assert len(_spooled(data)) == len(phantom.files) and _vectors(data, tiny_model) == {}

    quiet = {**waiting, "MEDSEARCH_SERIES_QUIET_SECONDS": "1", "MEDSEARCH_SPOOL_POLL_SECONDS": "0.2"}
    second = Listener(quiet, port, tmp_path / "second.log")
    try:
        _wait_for(lambda: not _spooled(data), 120, "the series to be planned and the spool to empty")
    finally:
        second.stop()
    _same(_vectors(data, tiny_model), reference)  # the sampled slices, with the very vectors `index` gives them
    assert not list((data / "spool" / "quarantine").glob("*.dcm"))  # nothing failed, nothing unsampled kept
    stats = _stats(quiet)
    assert stats["images"] == K and stats["slices_skipped_by_sampling"] == SLICES - K


def _ids_by_sop(data_dir: Path, model: Path) -> dict[str, int]:
    collection = Collection(make_settings(data_dir, model))
    try:
        ids = [int(i) for i in collection.catalog.all_ids()]
        return {str(row.sop_instance_uid): i for i, row in collection.catalog.images(ids).items()}
    finally:
        collection.close()


def test_listen_replans_a_series_that_grows_after_it_was_planned(
    phantom: PhantomSeries, tiny_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = _env(data, tiny_model, MEDSEARCH_SERIES_SLICES=str(K), MEDSEARCH_SERIES_QUIET_SECONDS="1")
    listener = Listener({**env, "MEDSEARCH_SPOOL_POLL_SECONDS": "0.2"}, free_port(), tmp_path / "listen.log")
    half = SLICES // 2
    sop_at = {sop: z for z, sop in phantom.sop_by_position.items()}
    try:
        _send(listener.port, phantom.files[:half])  # the lower half of the volume, then quiet: planned
        _wait_for(lambda: not _spooled(data) and len(_ids_by_sop(data, tiny_model)) == K, 120, "the first plan")
        before = _ids_by_sop(data, tiny_model)
        _send(listener.port, phantom.files[half:SLICES])  # the same series goes on: the upper half
        _wait_for(lambda: not _spooled(data), 120, "the second plan")
    finally:
        listener.stop()
    after = _ids_by_sop(data, tiny_model)
    assert len(after) == K  # still K slices for the whole series, not K per arrival
    positions = sorted(sop_at[sop] for sop in after)
    assert positions[0] == phantom.positions[0] and positions[-1] == phantom.positions[SLICES - 1]  # whole extent
    assert any(sop_at[sop] > phantom.positions[half - 1] for sop in after)  # newly sampled from the upper half
    kept = set(before) & set(after)
    assert kept and all(before[sop] == after[sop] for sop in kept)  # kept slices: same rows, never encoded again
    assert set(before) - set(after)  # some of the first plan's slices gave way to the wider extent
