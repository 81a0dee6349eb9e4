"""Every pixel file of pydicom's test sets sent to `medsearch listen` by DCMTK storescu and by pynetdicom, each in its
own transfer syntax: every acknowledged instance is indexed or quarantined with a reason, and the indexed set is
what `medsearch index` makes of the same files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE

from indexer.pipeline import IndexOptions
from indexer.quarantine import Quarantine
from indexer.spool import Spool, SpoolWorker
from retrieval.collection import Collection
from tests.conftest import make_settings, pydicom_roots, testdata_file
from tests.orthanc import free_port
from tests.test_pacs_listen import MEDSEARCH, Listener, _env, _wait_for

pytestmark = pytest.mark.peers  # starts Orthanc and DCMTK's storescu (not in `make test-fast`)

STORESCU = "/usr/bin/storescu"  # DCMTK's, not pynetdicom's script of the same name
PROPOSE = {  # storescu's proposal option for each file's own transfer syntax (sent with -R: no transcoding)
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
Key = tuple[str, int]  # (SOP Instance UID, frame): the identity duplicates are dropped by


def pixel_files() -> list[tuple[Path, str]]:
    """Every file of the installed test sets that pydicom reads and that holds pixel data, with its syntax."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for root in pydicom_roots():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                try:
                    ds = pydicom.dcmread(path, defer_size=256)
                except Exception:
                    continue
                if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                    found.append((path, str(ds.file_meta.get("TransferSyntaxUID", ""))))
    return found


def send_with_storescu(port: int, files: list[tuple[Path, str]]) -> list[Path]:
    """One association per file, proposing only its own syntax; returns the files answered with Success."""
    acknowledged = []
    for path, syntax in files:
        option = [PROPOSE[syntax]] if syntax in PROPOSE else []
        run = subprocess.run(
            [STORESCU, "-v", "-R", *option, "-aet", "STORESCU", "-aec", "MEDSEARCH", "127.0.0.1", str(port), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if "Received Store Response (Success)" in run.stdout + run.stderr:
            acknowledged.append(path)
    return acknowledged


def send_with_pynetdicom(port: int, files: list[tuple[Path, str]]) -> list[Path]:
    """pynetdicom as the second sender: one association per file in its own syntax."""
    acknowledged = []
    for path, _ in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
            ae = AE(ae_title="PYSCU")
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        except Exception:  # no SOP class or file meta: pynetdicom cannot send it
            continue
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDSEARCH")
        if not assoc.is_established:
            continue
        try:
            reply = assoc.send_c_store(ds)
            if reply and int(reply.get("Status", -1)) == 0x0000:
                acknowledged.append(path)
        except Exception:  # a dataset pynetdicom refuses to encode was never acknowledged
            pass
        finally:
            assoc.release()
    return acknowledged


def indexed_keys(data_dir: Path) -> set[Key]:
    with sqlite3.connect(data_dir / "medsearch.db") as conn:
        return {(str(s), int(f)) for s, f in conn.execute("select sop_instance_uid, frame from images")}


def sop_of(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def corpus() -> list[tuple[Path, str]]:
    files = pixel_files()
    assert len(files) >= 150, f"only {len(files)} pixel files: is pydicom-data installed?"
    return files


def _receive(root: Path, model: Path, send: str, files: list[tuple[Path, str]]) -> tuple[list[Path], Path]:
    """Start `medsearch listen`, send every file, wait until the spool is drained, stop it."""
    root.mkdir(parents=True)
    env = _env(root / "data", model, MEDSEARCH_SPOOL_POLL_SECONDS="0.2")
    listener = Listener(env, free_port(), root / "listen.log")
    try:
        sender = send_with_storescu if send == "storescu" else send_with_pynetdicom
        acknowledged = sender(listener.port, files)
        spool = root / "data" / "spool"
        _wait_for(lambda: not list(spool.glob("*.dcm")), 600, f"the listener to drain what {send} sent")
    finally:
        listener.stop()
    return acknowledged, root / "data"


@pytest.fixture(scope="module")
def reference() -> dict[frozenset[Path], set[Key]]:
    """What `medsearch index` indexed from a set of files (both senders usually get the same set acknowledged)."""
    return {}


def _index_keys(cache: dict[frozenset[Path], set[Key]], root: Path, model: Path, files: list[Path]) -> set[Key]:
    if frozenset(files) not in cache:
        data = root / f"index-{len(cache)}"
        env = _env(data, model)
        run = subprocess.run(
            [MEDSEARCH, "index", "-q", "--allow-failures", *map(str, files)], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
        cache[frozenset(files)] = indexed_keys(data)
    return cache[frozenset(files)]


@pytest.mark.parametrize("send", ["storescu", "pynetdicom"])
def test_every_acknowledged_instance_is_indexed_or_quarantined(
    send: str,
    corpus: list[tuple[Path, str]],
    reference: dict[frozenset[Path], set[Key]],
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    acknowledged, data_dir = _receive(tmp_path / send, tiny_model, send, corpus)
    assert len(acknowledged) >= 140, f"{send} got Success for only {len(acknowledged)} of {len(corpus)} files"
    received = indexed_keys(data_dir)
    kept = Quarantine(data_dir / "spool").entries()
    for entry in kept:  # bytes as received plus a machine code and a human reason
        assert entry.path.stat().st_size > 0 and entry.code and entry.reason, entry
    quarantined = {entry.uri.split("?copy=")[0].rsplit("/", 1)[-1] for entry in kept}  # each copy: its own record
    indexed_sops = {sop for sop, _ in received}
    lost = [p for p in acknowledged if sop_of(p) not in indexed_sops | quarantined]
    assert not lost, f"acknowledged, then neither indexed nor quarantined: {lost}"
    # the very same files through `medsearch index`: the same images (same SOP instance, same frame)
    expected = _index_keys(reference, tmp_path, tiny_model, acknowledged)
    assert received == expected, (
        f"only via listen: {sorted(received - expected)[:5]}; only via index: {sorted(expected - received)[:5]}"
    )
    # `medsearch failures` points at the kept bytes of every quarantined instance
    env = _env(data_dir, tiny_model)
    listing = subprocess.run([MEDSEARCH, "failures", "--json"], env=env, capture_output=True, text=True, check=True)
    kept_paths = {item["kept"] for item in json.loads(listing.stdout) if item["kept"]}
    assert kept_paths == {str(entry.path) for entry in kept}


def test_an_instance_without_study_uid_is_indexed_not_dropped(tmp_path: Path, tiny_model: Path) -> None:
    """pydicom's JPEG-LS near-lossless files carry no Study/Series Instance UID: `index` takes them, so must we."""
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    try:
        spool = Spool(tmp_path / "spool")
        for name in ("JPEGLSNearLossless_08.dcm", "SC_rgb_jls_lossy_line.dcm"):
            spool.put(testdata_file(name).read_bytes())
        assert SpoolWorker(collection, spool, IndexOptions(workers=0), batch=8, poll_seconds=1).drain_once() == 2
        rows = collection.catalog.images([int(i) for i in collection.catalog.all_ids()]).values()
        assert sorted(r.sop_instance_uid or "" for r in rows) == sorted(
            sop_of(testdata_file(n)) for n in ("JPEGLSNearLossless_08.dcm", "SC_rgb_jls_lossy_line.dcm")
        )
        assert all(r.study_instance_uid is None for r in rows)
        assert spool.pending(10) == [] and Quarantine(spool.folder).entries() == []
    finally:
        collection.close()


def test_a_failed_instance_is_quarantined_listed_and_requeued(tmp_path: Path, tiny_model: Path) -> None:
    """Too large for this server's limit: kept with its reason, listed by `failures`, indexed by `requeue` once the
    limit is raised; a re-sent SOP UID never overwrites a spooled file."""
    source = testdata_file("MR_small.dcm")
    data_dir = tmp_path / "data"
    small = make_settings(data_dir, tiny_model, max_file_bytes=source.stat().st_size - 1)
    collection = Collection(small)
    try:
        spool = Spool(small.resolved_spool_dir)
        first = spool.put(source.read_bytes())
        second = spool.put(source.read_bytes())
        assert first != second and first.exists() and second.exists()
        worker = SpoolWorker(collection, spool, IndexOptions(workers=0), batch=8, poll_seconds=1)
        assert [worker.drain_once(), worker.drain_once()] == [1, 1]  # copies of one instance: one per batch
        kept = Quarantine(spool.folder).entries()
        assert sorted(e.path.name for e in kept) == sorted([first.name, second.name])
        assert {e.code for e in kept} == {"too_large"} and spool.pending(10) == []
        assert all(e.path.read_bytes() == source.read_bytes() for e in kept)  # the bytes as received
    finally:
        collection.close()
    env = _env(data_dir, tiny_model)
    listing = subprocess.run([MEDSEARCH, "failures", "--json"], env=env, capture_output=True, text=True, check=True)
    assert {item["kept"] for item in json.loads(listing.stdout)} == {str(e.path) for e in kept}
    again = subprocess.run([MEDSEARCH, "requeue"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "requeued 2 quarantined instances; indexed 1 images; 0 quarantined" in again.stdout
    assert [sop for sop, _ in indexed_keys(data_dir)] == [sop_of(source)]
    assert Quarantine(spool.folder).entries() == []
