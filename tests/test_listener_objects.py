"""DCMTK storescu -> `medsearch listen`: retired image classes are accepted and indexed; non-image objects are
acknowledged, recorded as skipped under their SOP class and deleted from the spool (never quarantined)."""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from indexer.quarantine import Quarantine
from tests.conftest import testdata_file
from tests.orthanc import free_port
from tests.test_dicom_senders import send_with_storescu, sop_of
from tests.test_pacs_listen import MEDSEARCH, Listener, _env, _indexed_uids, _wait_for

pytestmark = pytest.mark.peers  # real DCMTK storescu into `medsearch listen` (not in `make test-fast`)

RETIRED_US = "color-px.dcm"  # Ultrasound Image Storage (Retired), 1.2.840.10008.5.1.4.1.1.6: `index` reads it
NON_IMAGES = {
    "waveform_ecg.dcm": "12-lead ECG Waveform Storage",
    "rtplan.dcm": "RT Plan Storage",
}
REPORTS = ("test-SR.dcm", "reportsi.dcm")  # structured reports: stored as their study's report (issue 21)


def _syntax(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[list[str], Path]]:
    """Start the listener, send the retired US image and the non-image objects with storescu, wait for the spool."""
    root = tmp_path_factory.mktemp("objects")
    env = _env(root / "data", tiny_model, MEDSEARCH_SPOOL_POLL_SECONDS="0.2")
    listener = Listener(env, free_port(), root / "listen.log")
    try:
        files = [testdata_file(name) for name in (RETIRED_US, *NON_IMAGES, *REPORTS)]
        acknowledged = send_with_storescu(listener.port, [(path, _syntax(path)) for path in files])
        spool = root / "data" / "spool"
        _wait_for(lambda: not list(spool.glob("*.dcm")), 120, "the listener to drain the spool")
    finally:
        listener.stop()
    yield [path.name for path in acknowledged], root / "data"


def _run(data_dir: Path, model: Path, *args: str) -> object:
    proc = subprocess.run([MEDSEARCH, *args], env=_env(data_dir, model), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_retired_ultrasound_image_storage_is_accepted_and_indexed(received: tuple[list[str], Path]) -> None:
    acknowledged, data_dir = received
    assert RETIRED_US in acknowledged
    assert sop_of(testdata_file(RETIRED_US)) in _indexed_uids(data_dir)


def test_non_image_objects_are_acknowledged_skipped_and_not_kept(
    received: tuple[list[str], Path], tiny_model: Path
) -> None:
    acknowledged, data_dir = received
    assert set(NON_IMAGES) | set(REPORTS) <= set(acknowledged)
    assert Quarantine(data_dir / "spool").entries() == []  # nothing with a patient name in it stays on disk
    assert not [p for p in (data_dir / "spool").rglob("*") if p.is_file()]
    stats = _run(data_dir, tiny_model, "stats", "--json")
    assert isinstance(stats, dict) and stats["failures"] == 0 and stats["images"] == 1
    assert stats["not_images_by_class"] == {name: 1 for name in NON_IMAGES.values()}
    dropped = _run(data_dir, tiny_model, "dropped", "--json")
    assert isinstance(dropped, list)
    assert {item["source"].rsplit("/", 1)[1]: item["sop_class"] for item in dropped} == {
        sop_of(testdata_file(name)): sop_class for name, sop_class in NON_IMAGES.items()
    }


def test_received_structured_reports_become_their_studys_reports(
    received: tuple[list[str], Path], tiny_model: Path
) -> None:
    _, data_dir = received
    for name in REPORTS:
        study = pydicom.dcmread(testdata_file(name), stop_before_pixels=True).StudyInstanceUID
        shown = _run(data_dir, tiny_model, "reports", "show", study, "--json")
        assert isinstance(shown, list) and shown[0]["origin"] == "sr" and shown[0]["text"]
