"""Nothing acknowledged is lost: copies of one instance each keep their own bytes and record, and whatever a sender
puts in a UID, the instance is indexed or quarantined. Real DCMTK storescu into a real `medsearch listen`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from indexer.quarantine import Quarantine
from tests.conftest import testdata_file
from tests.orthanc import encode, free_port, with_new_uids
from tests.test_dicom_senders import send_with_storescu
from tests.test_pacs_listen import MEDSEARCH, Listener, _env, _indexed_uids, _wait_for

pytestmark = pytest.mark.peers  # real DCMTK storescu into `medsearch listen` (not in `make test-fast`)


def _write(ds: pydicom.Dataset, path: Path) -> tuple[Path, str]:
    path.write_bytes(encode(ds))
    return path, str(ds.file_meta.TransferSyntaxUID)


def _send(port: int, *files: tuple[Path, str]) -> None:
    assert send_with_storescu(port, list(files)) == [path for path, _ in files], "storescu got no Success"


def _spool_empty(data_dir: Path) -> bool:
    return not list((data_dir / "spool").glob("*.dcm"))


def _medsearch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=300)


def _counts_agree(env: dict[str, str]) -> int:
    """`stats` counts exactly the failures `failures` lists, and every kept copy is listed once; returns the count."""
    stats = json.loads(_medsearch(env, "stats", "--json").stdout)
    listed = json.loads(_medsearch(env, "failures", "--json").stdout)
    kept = Quarantine(Path(env["MEDSEARCH_DATA_DIR"]) / "spool").entries()
    assert stats["failures"] == len(listed), (stats["failures"], listed)
    assert sorted(str(item["kept"]) for item in listed if item["kept"]) == sorted(str(e.path) for e in kept)
    return len(listed)


@pytest.fixture
def home(tmp_path: Path, tiny_model: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path, _env(tmp_path / "data", tiny_model, MEDSEARCH_SPOOL_POLL_SECONDS="0.2")


def test_two_failing_copies_of_one_instance_are_both_kept(home: tuple[Path, dict[str, str]]) -> None:
    """Item 1: the second copy to fail used to replace the first one's bytes in quarantine."""
    root, env = home
    env["MEDSEARCH_MAX_FILE_BYTES"] = "1000"  # every instance fails (too_large) and is kept
    ds = with_new_uids(testdata_file("CT_small.dcm"))
    copies = []
    for i, words in enumerate(("first copy", "second copy")):
        ds.ImageComments = words  # same instance, other bytes: both were acknowledged
        copies.append(_write(ds, root / f"copy{i}.dcm"))
    listener = Listener(env, free_port(), root / "listen.log")
    try:
        for copy in copies:  # one at a time: the first is quarantined before the second arrives
            _send(listener.port, copy)
            _wait_for(lambda: _spool_empty(root / "data"), 120, "the listener to process the copy")
    finally:
        listener.stop()
    kept = Quarantine(root / "data" / "spool").entries()
    comments = sorted(str(pydicom.dcmread(e.path).ImageComments) for e in kept)
    assert comments == ["first copy", "second copy"], f"kept in quarantine: {comments}"
    assert {e.code for e in kept} == {"too_large"} and len({e.uri for e in kept}) == 2
    assert _counts_agree(env) == 2


def test_a_copy_that_decodes_is_indexed_the_one_that_does_not_is_kept(home: tuple[Path, dict[str, str]]) -> None:
    """Item 3: copies sharing a URI, one broken, one fine, received before the worker looks (one batch)."""
    root, env = home
    ds = with_new_uids(testdata_file("CT_small.dcm"))
    good = _write(ds, root / "good.dcm")
    ds.PixelData = ds.PixelData[:100]  # the header reads, the pixels do not decode
    broken = _write(ds, root / "broken.dcm")
    slow = {**env, "MEDSEARCH_SPOOL_POLL_SECONDS": "600"}  # looks once at start, then not for 10 minutes
    receiver = Listener(slow, free_port(), root / "receive.log")
    try:
        _send(receiver.port, broken, good)
    finally:
        receiver.stop()
    assert len(list((root / "data" / "spool").glob("*.dcm"))) == 2
    worker = Listener(env, free_port(), root / "listen.log")
    try:
        _wait_for(lambda: _spool_empty(root / "data"), 120, "the listener to drain the spool")
    finally:
        worker.stop()
    assert _indexed_uids(root / "data") == {str(ds.SOPInstanceUID)}
    kept = Quarantine(root / "data" / "spool").entries()
    assert len(kept) == 1 and kept[0].code == "decode_error", kept  # the broken copy alone, with its own reason
    assert len(pydicom.dcmread(kept[0].path).PixelData) == 100
    assert _counts_agree(env) == 1
    again = _medsearch(env, "requeue")  # the broken copy fails again (exit 2); the good one is not dragged along
    assert "requeued 1 quarantined instances; indexed 0 images; 1 quarantined" in again.stdout, again.stdout
    assert again.returncode == 2
    assert _counts_agree(env) == 1


@pytest.mark.parametrize("sop", [".1.2.826.0.1.3680043.8.498.1", "../../x"])
def test_an_instance_with_any_sop_uid_is_processed_not_stranded(sop: str, home: tuple[Path, dict[str, str]]) -> None:
    """Item 2: spool names used to be the SOP UID, and the pending scan skipped names starting with '.'."""
    root, env = home
    ds = with_new_uids(testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    listener = Listener(env, free_port(), root / "listen.log")
    try:
        _send(listener.port, _write(ds, root / "odd.dcm"))
        _wait_for(lambda: _spool_empty(root / "data"), 120, "the listener to process the instance")
    finally:
        listener.stop()
    kept = Quarantine(root / "data" / "spool").entries()
    assert sop in _indexed_uids(root / "data") or [e.path for e in kept], "acknowledged, then neither indexed nor kept"
    assert not list((root / "data" / "spool").glob(".*")), "a hidden file is left in the spool"
