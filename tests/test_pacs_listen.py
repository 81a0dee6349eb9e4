"""C-STORE into medsearch: pynetdicom SCU and a real Orthanc sending to our AE, SIGKILL safety, refused callers."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from indexer.listener import start_listener
from indexer.pipeline import IndexOptions
from indexer.spool import Spool, SpoolWorker
from retrieval.collection import Collection
from retrieval.errors import NotFoundError
from retrieval.render import cached_png
from retrieval.sources.received import received_uri
from tests.conftest import testdata_file
from tests.orthanc import Orthanc, encode, free_port, start_orthanc, with_new_uids

pytestmark = pytest.mark.peers  # starts Orthanc (not in `make test-fast`)

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
KINDS = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",  # uncompressed
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE
    "emri_small_RLE.dcm": "1.2.840.10008.1.2.5",  # 10 frames
    "SC_rgb_rle_2frame.dcm": "1.2.840.10008.1.2.5",  # colour, 2 frames
    "JPEG-LL.dcm": "1.2.840.10008.1.2.4.70",  # JPEG lossless
}


def _fresh() -> dict[str, pydicom.Dataset]:
    return {name: with_new_uids(testdata_file(name)) for name in KINDS}


def _scu(title: str = "PYSCU") -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def store(port: int, datasets: list[pydicom.Dataset], title: str = "PYSCU") -> list[int]:
    """Send each dataset in its own transfer syntax; returns the C-STORE statuses."""
    ae = _scu(title)
    ae.add_requested_context(Verification)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEARCH")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.release()
    return statuses


def spooled(folder: Path, sop: str) -> Path:
    """The spooled file holding instance `sop` (spool names never come from a sender's UIDs)."""
    found = [p for p in folder.glob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == sop]
    assert len(found) == 1, f"{len(found)} spooled files hold {sop}"
    return found[0]


def _same_pixels(received: Path, name: str) -> None:
    got = pydicom.dcmread(received)
    source = pydicom.dcmread(testdata_file(name))
    assert np.array_equal(got.pixel_array, source.pixel_array), name


def _indexed_uids(data_dir: Path) -> set[str]:
    db = data_dir / "medsearch.db"
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        try:
            return {row[0] for row in conn.execute("select sop_instance_uid from images")}
        except sqlite3.OperationalError:  # tables not created yet
            return set()


def _wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Listener:
    """`medsearch listen` as a real process."""

    def __init__(self, env: dict[str, str], port: int, log: Path, *extra: str, session: bool = False) -> None:
        self.log = log
        self.port = port
        self.data_dir = Path(env["MEDSEARCH_DATA_DIR"])
        with open(log, "ab") as out:  # session: its own process group (pgid = pid), to count what it leaves behind
            self.process = subprocess.Popen(
                [MEDSEARCH, "listen", "--port", str(port), *extra],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=session,
            )
        deadline = time.monotonic() + 120
        try:
            while "listening as" not in log.read_text():
                assert self.process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        except BaseException:
            self.stop()  # never leave a listener behind
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _env(data_dir: Path, model: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEDSEARCH_DATA_DIR": str(data_dir),
        "MEDSEARCH_MODEL": str(model),
        "MEDSEARCH_WORKERS": "0",
        "MEDSEARCH_SERIES_QUIET_SECONDS": "1",  # a CT/MR series waits this long after its last instance
        **extra,
    }


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spool, int]]:
    """Our Storage SCP in this process (no worker), so tests can inspect exactly what was spooled."""
    spool = Spool(tmp_path_factory.mktemp("spool"))
    server = start_listener(spool, "MEDSEARCH", "127.0.0.1", free_port())
    yield spool, int(server.server_address[1])
    server.shutdown()


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Listener]:
    root = tmp_path_factory.mktemp("listener")
    env = _env(root / "data", tiny_model, MEDSEARCH_SPOOL_POLL_SECONDS="0.2")
    proc = Listener(env, free_port(), root / "listen.log", "--allow", "ORTHANC,PYSCU")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, scp: tuple[Spool, int], listener: Listener) -> Iterator[Orthanc]:
    modalities = {
        "INPROC": ("MEDSEARCH_IN", scp[1]),  # our SCP answers to any called AE title
        "LISTENER": ("MEDSEARCH", listener.port),
        "PYSCU": ("PYSCU", free_port()),  # known to Orthanc, so it accepts our C-MOVE requests
    }
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-listen"), modalities=modalities)
    yield server
    server.stop()


def _drain_and_check(collection: Collection, spool: Spool, sent: dict[str, pydicom.Dataset]) -> None:
    worker = SpoolWorker(collection, spool, IndexOptions(workers=0), batch=64, poll_seconds=1)
    assert worker.drain_once() == len(sent)
    assert spool.pending(100) == []  # removed once committed
    ids = [int(x) for x in collection.catalog.all_ids()]
    rows = {i.sop_instance_uid: i for i in collection.catalog.images(ids).values()}
    for name, ds in sent.items():
        image = rows[str(ds.SOPInstanceUID)]
        assert (image.study_instance_uid, image.series_instance_uid) == (ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert image.source_uri == received_uri(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert image.number_of_frames == int(ds.get("NumberOfFrames", 1)), name
        # the spooled file is gone: the renderings were cached before it was deleted (no PACS configured here)
        assert cached_png(image, "thumbnail", collection.settings).startswith(b"\x89PNG")
        assert cached_png(image, "preview", collection.settings).startswith(b"\x89PNG")


def test_pynetdicom_c_store_spools_exact_pixels_then_indexes(scp: tuple[Spool, int], collection: Collection) -> None:
    spool, port = scp
    sent = _fresh()
    assert store(port, list(sent.values())) == [0x0000] * len(sent)
    for name, ds in sent.items():
        received = spooled(spool.folder, ds.SOPInstanceUID)
        assert pydicom.dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID == KINDS[name]
        _same_pixels(received, name)
    _drain_and_check(collection, spool, sent)


def test_orthanc_sends_to_our_ae(orthanc: Orthanc, scp: tuple[Spool, int], collection: Collection) -> None:
    spool, _ = scp
    sent = _fresh()
    ids = [orthanc.upload(encode(ds)) for ds in sent.values()]
    with orthanc.client() as http:
        assert http.post("/modalities/INPROC/echo", json={}).status_code == 200
        job = http.post("/modalities/INPROC/store", json={"Resources": ids, "Synchronous": True})
    assert job.status_code == 200 and job.json()["FailedInstancesCount"] == 0, job.text
    for name, ds in sent.items():
        received = spooled(spool.folder, ds.SOPInstanceUID)
        syntax = pydicom.dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax == KINDS[name], f"{name}: Orthanc sent {syntax.name}"  # as stored: we accept them all
        _same_pixels(received, name)
    _drain_and_check(collection, spool, sent)
    # with the rendering cache gone, a received image is fetched from the PACS by its UIDs (DICOMweb)
    shutil.rmtree(collection.settings.data_dir / "cache")
    pacs = collection.settings.model_copy(update={"dicomweb_url": orthanc.dicomweb})
    image = collection.catalog.images_by_source(
        [received_uri(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)]
    )[0]
    assert cached_png(image, "preview", pacs).startswith(b"\x89PNG")
    with pytest.raises(NotFoundError, match="set MEDSEARCH_DICOMWEB_URL"):
        cached_png(image, "thumbnail", collection.settings)


def test_c_move_from_orthanc_to_our_ae(orthanc: Orthanc, scp: tuple[Spool, int], collection: Collection) -> None:
    spool, _ = scp
    study = generate_uid()
    sent = {name: with_new_uids(testdata_file(name), study=study) for name in ("CT_small.dcm", "emri_small_RLE.dcm")}
    for ds in sent.values():
        orthanc.upload(encode(ds))
    ae = _scu()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
    answers = list(assoc.send_c_move(query, "MEDSEARCH_IN", StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    final = answers[-1][0]
    assert final.Status == 0x0000 and int(final.get("NumberOfCompletedSuboperations", 0)) == len(sent)
    for name, ds in sent.items():
        _same_pixels(spooled(spool.folder, ds.SOPInstanceUID), name)
    _drain_and_check(collection, spool, sent)


def test_a_spool_that_cannot_persist_answers_out_of_resources(tmp_path: Path) -> None:
    class FullDisk(Spool):
        def put(self, data: bytes) -> Path:
            raise OSError(errno.ENOSPC, "No space left on device")

    server = start_listener(FullDisk(tmp_path / "spool"), "MEDSEARCH", "127.0.0.1", free_port())
    try:
        ds = with_new_uids(testdata_file("CT_small.dcm"))
        assert store(int(server.server_address[1]), [ds]) == [0xA700]  # the sender keeps it and may retry
    finally:
        server.shutdown()
    assert not list((tmp_path / "spool").iterdir())


def test_orthanc_to_the_listener_process(orthanc: Orthanc, listener: Listener) -> None:
    sent = _fresh()
    ids = [orthanc.upload(encode(ds)) for ds in sent.values()]
    with orthanc.client() as http:
        assert http.post("/modalities/LISTENER/echo", json={}).status_code == 200
        job = http.post("/modalities/LISTENER/store", json={"Resources": ids, "Synchronous": True})
    assert job.status_code == 200 and job.json()["FailedInstancesCount"] == 0, job.text
    data_dir = listener.data_dir
    want = {str(ds.SOPInstanceUID) for ds in sent.values()}
    _wait_for(lambda: want <= _indexed_uids(data_dir), 90, "the listener to index what Orthanc sent")
    _wait_for(lambda: not list((data_dir / "spool").glob("*.dcm")), 30, "the spool to empty")


def test_unknown_calling_ae_is_refused_quickly(listener: Listener) -> None:
    received: list[Any] = []
    ae = _scu("INTRUDER")
    ae.add_requested_context(Verification)
    start = time.monotonic()
    assoc = ae.associate(
        "127.0.0.1", listener.port, ae_title="MEDSEARCH", evt_handlers=[(evt.EVT_ACSE_RECV, received.append)]
    )
    elapsed = time.monotonic() - start
    assert assoc.is_rejected and not assoc.is_established
    reply = received[-1].primitive
    # A-ASSOCIATE-RJ: rejected-permanent (1), by the service user (1), calling AE title not recognised (3)
    assert (reply.result, reply.result_source, reply.diagnostic) == (1, 1, 3)
    assert elapsed < 5, f"refusal took {elapsed:.1f} s"
    assert store(listener.port, []) == []  # an allowed AE (PYSCU) associates and gets C-ECHO 0x0000


def test_sigkill_right_after_success_loses_nothing(tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    slow = _env(data_dir, tiny_model, MEDSEARCH_SPOOL_POLL_SECONDS="600")  # the worker would not get to it
    first = Listener(slow, port, tmp_path / "first.log")
    ds = with_new_uids(testdata_file("MR_small_jp2klossless.dcm"))
    try:
        assert store(port, [ds]) == [0x0000]
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.stop()
    assert spooled(data_dir / "spool", ds.SOPInstanceUID).exists()
    assert str(ds.SOPInstanceUID) not in _indexed_uids(data_dir)  # acknowledged, not yet indexed when killed

    second = Listener(_env(data_dir, tiny_model), port, tmp_path / "second.log")
    try:
        _wait_for(lambda: str(ds.SOPInstanceUID) in _indexed_uids(data_dir), 60, "the restarted listener")
        _wait_for(lambda: not list((data_dir / "spool").glob("*.dcm")), 30, "the spool to empty")
    finally:
        second.stop()
