"""Non-image DICOM objects are skipped with their SOP class named, dropped copies are listed, a gzip is read."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from indexer.pipeline import IndexOptions
from indexer.quarantine import Quarantine
from indexer.spool import Spool, SpoolWorker
from retrieval.collection import Collection
from retrieval.errors import NotAnImageError
from retrieval.imaging.decode import decode_bytes
from retrieval.imaging.sop_classes import classify_dataset, storage_sop_classes
from retrieval.sources.received import received_uri
from tests.commands import index
from tests.conftest import make_settings, testdata_file
from tests.test_pacs_listen import MEDSEARCH

NON_IMAGES = {  # pydicom test file -> the SOP class it is skipped under
    "test-SR.dcm": "Comprehensive SR Storage",
    "rtplan.dcm": "RT Plan Storage",
    "waveform_ecg.dcm": "12-lead ECG Waveform Storage",
    "DICOMDIR": "Media Storage Directory Storage",
}


def _header(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(testdata_file(name), stop_before_pixels=True, force=True)


def test_classification_from_the_header() -> None:
    kinds = {name: classify_dataset(_header(name)) for name in (*NON_IMAGES, "CT_small.dcm", "reportsi.dcm")}
    assert {n: k.name for n, k in kinds.items() if n in NON_IMAGES} == NON_IMAGES
    assert kinds["test-SR.dcm"].kind == kinds["reportsi.dcm"].kind == "structured_report"
    assert kinds["rtplan.dcm"].kind == "non_image" and kinds["DICOMDIR"].kind == "directory"
    assert kinds["CT_small.dcm"].kind == "image" and not kinds["CT_small.dcm"].skipped
    assert all(kinds[n].skipped for n in NON_IMAGES)
    stripped = _header("IM000000")  # a CT image stripped of its pixels is a broken image, not a skipped object
    assert classify_dataset(stripped).kind == "image"
    # the listener accepts the retired storage classes `index` reads, e.g. Ultrasound Image Storage (Retired)
    assert {"1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.88.11"} <= set(
        storage_sop_classes()
    )


@pytest.mark.e2e  # the real `medsearch` command
def test_non_image_objects_are_skipped_and_counted_exit_0(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", *NON_IMAGES):
        shutil.copy(testdata_file(name), folder / name)
    proc = index(env, str(folder), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["indexed"], report["failed"], report["not_images"]) == (1, 0, 4)
    assert report["not_images_by_class"] == {name: 1 for name in NON_IMAGES.values()}
    stats = json.loads(subprocess.run([MEDSEARCH, "stats", "--json"], env=env, capture_output=True, check=True).stdout)
    assert stats["failures"] == 0 and stats["not_images"] == 4
    assert stats["not_images_by_class"] == report["not_images_by_class"]
    text = subprocess.run([MEDSEARCH, "stats"], env=env, capture_output=True, text=True, check=True).stdout
    assert "not images: 4 skipped" in text and "Comprehensive SR Storage 1" in text
    listed = json.loads(subprocess.run([MEDSEARCH, "dropped", "--json"], env=env, capture_output=True).stdout)
    assert {(Path(i["source"]).name, i["why"], i["sop_class"]) for i in listed} == {
        (name, "not_an_image", sop_class) for name, sop_class in NON_IMAGES.items()
    }
    again = index(env, str(folder), "--json")  # a re-run opens none of them again
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == 5


@pytest.mark.e2e  # the real `medsearch` command
def test_dropped_copies_are_listed_with_what_they_repeat(env: dict[str, str], tmp_path: Path) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    shutil.copy(testdata_file("MR_small.dcm"), first / "MR_small.dcm")
    shutil.copy(testdata_file("MR_small.dcm"), first / "same-run-copy.dcm")
    shutil.copy(testdata_file("MR_small.dcm"), later / "next-run-copy.dcm")
    shutil.copy(testdata_file("MR_small_RLE.dcm"), later / "MR_small_RLE.dcm")  # the same instance, RLE-encoded
    assert index(env, str(first)).returncode == 0
    assert index(env, str(later)).returncode == 0
    listing = subprocess.run([MEDSEARCH, "dropped", "--json"], env=env, capture_output=True, text=True, check=True)
    original = str((first / "MR_small.dcm").resolve())
    copies = {Path(i["source"]).name: (i["why"], i["duplicate_of"]) for i in json.loads(listing.stdout)}
    names = ("same-run-copy.dcm", "next-run-copy.dcm", "MR_small_RLE.dcm")
    assert copies == {name: ("copy", original) for name in names}
    text = subprocess.run([MEDSEARCH, "dropped"], env=env, capture_output=True, text=True, check=True).stdout
    assert f"next-run-copy.dcm: copy of {original}" in text.replace("\n", "") and "3 copies, 0 not images" in text


@pytest.mark.e2e  # the real `medsearch` command
def test_a_gzipped_dicom_is_read_like_the_file_it_contains(env: dict[str, str], tmp_path: Path) -> None:
    zipped = testdata_file("zipMR.gz")
    image = decode_bytes(zipped.read_bytes())
    plain = decode_bytes(gzip.decompress(zipped.read_bytes()))
    assert image.meta.sop_instance_uid == plain.meta.sop_instance_uid and image.meta.modality == "MR"
    assert (image.frames[0].pixels == plain.frames[0].pixels).all()
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(zipped, folder / "zipMR.gz")
    proc = index(env, str(folder), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["indexed"] == 1, proc.stdout + proc.stderr


def test_a_search_upload_of_a_report_is_refused_by_name() -> None:
    with pytest.raises(NotAnImageError, match="Comprehensive SR Storage") as refused:
        decode_bytes(testdata_file("test-SR.dcm").read_bytes())
    assert refused.value.code == "not_an_image" and refused.value.status == 415


def test_a_received_non_image_object_is_skipped_and_deleted_not_quarantined(tmp_path: Path, tiny_model: Path) -> None:
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    try:
        spool = Spool(tmp_path / "spool")
        names = ("CT_small.dcm", "test-SR.dcm", "waveform_ecg.dcm")
        for name in names:
            spool.put(testdata_file(name).read_bytes())
        assert SpoolWorker(collection, spool, IndexOptions(workers=0), batch=8, poll_seconds=1).drain_once() == 3
        assert spool.pending(10) == [] and Quarantine(spool.folder).entries() == []
        assert collection.catalog.failures() == []
        stats = collection.catalog.stats()
        assert (stats["images"], stats["not_images"]) == (1, 2)
        dropped = {s.uri: s.sop_class for s in collection.catalog.dropped()}
        sr = _header("test-SR.dcm")
        assert dropped[received_uri(sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)] == (
            "Comprehensive SR Storage"
        )
    finally:
        collection.close()
