"""The results SR itself, read by tools we did not write: DCMTK dsrdump, dicom3tools dciodvfy, highdicom."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.uid import generate_uid

from retrieval.errors import SettingsError
from retrieval.export.errors import ExportNeedsDicomError, ExportOffError
from retrieval.export.run import header_of
from retrieval.export.send import AeAddress, targets
from retrieval.export.sr import NOT_FOR_DIAGNOSIS, SCHEME, About, Match, build_sr
from retrieval.settings import Settings
from tests.conftest import testdata_file

OTHERS = ["MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "emri_small.dcm", "liver_1frame.dcm"]
ABOUT = About(model_id="google/medsiglip-448", fingerprint="0123456789ab-ba9876543210-v2-1152", query_kind="image")


def _query() -> pydicom.Dataset:
    return pydicom.dcmread(testdata_file("CT_small.dcm"), stop_before_pixels=True)


def _matches(n: int = 10) -> list[Match]:
    """n matches in other patients' studies (real headers, fresh SOP UIDs so each is its own instance)."""
    found = []
    for rank in range(1, n + 1):
        ds = pydicom.dcmread(testdata_file(OTHERS[rank % len(OTHERS)]), stop_before_pixels=True)
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), generate_uid()
        level = ("image", "series", "study")[rank % 3]
        frame = int(ds.get("NumberOfFrames", 1)) // 2 + 1  # the middle frame, as indexed (emri_small: MR, 10 frames)
        match = Match(rank, 0.95 - rank / 100, level, 100 + rank, study, series, sop, str(ds.SOPClassUID), frame)
        found.append(match)
    return found


def _write(sr: pydicom.Dataset, path: Path) -> Path:
    sr.save_as(path, enforce_file_format=True)
    return path


def _items(sr: pydicom.Dataset) -> list[dict[str, object]]:
    """Each match container as {concept meaning: value}."""
    out = []
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "SCR-MATCH":
            continue
        values: dict[str, object] = {}
        for child in item.ContentSequence:
            name = child.ConceptNameCodeSequence[0].CodeMeaning
            if child.ValueType == "NUM":
                values[name] = float(child.MeasuredValueSequence[0].NumericValue)
            elif child.ValueType == "TEXT":
                values[name] = child.TextValue
            elif child.ValueType == "UIDREF":
                values[name] = child.UID
            elif child.ValueType == "IMAGE":
                values[name] = child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        out.append(values)
    return out


@pytest.mark.peers  # DCMTK and dicom3tools, programs we did not write
def test_sr_is_read_without_errors_by_dcmtk_dicom3tools_and_highdicom(tmp_path: Path) -> None:
    query, matches = _query(), _matches(10)
    path = _write(build_sr(query, matches, ABOUT), tmp_path / "sr.dcm")

    dump = subprocess.run(["/usr/bin/dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and "Comprehensive SR Document" in dump.stdout, dump.stderr
    assert "rror" not in dump.stderr and "arning" not in dump.stderr, dump.stderr
    assert dump.stdout.count('"Similar case"') == 10 and NOT_FOR_DIAGNOSIS[:27] in dump.stdout
    check = subprocess.run(["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (check.stdout + check.stderr).splitlines()
    assert lines and lines[0].strip() == "ComprehensiveSR", lines[:5]
    assert not [line for line in lines if line.startswith("Error")], lines
    # its only warnings: our own coding scheme, which dciodvfy cannot know ("99" = a local scheme, declared)
    assert all(SCHEME in line for line in lines if line.startswith("Warning")), lines

    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    evidence = {ref[2] for ref in sr.get_evidence()}  # (study, series, sop instance, sop class)
    assert evidence == {m.sop_uid for m in matches} | {str(query.SOPInstanceUID)}
    listed = _items(sr)
    assert [x["Rank"] for x in listed] == [m.rank for m in matches]
    assert [x["Similarity score"] for x in listed] == pytest.approx([m.score for m in matches])
    assert [x["Match level"] for x in listed] == [m.level for m in matches]
    assert [x.get("Frame number", 1.0) for x in listed] == [m.frame for m in matches]
    assert {m.frame for m in matches} > {1}  # a multi-frame match is among them
    assert [x["Similar image"] for x in listed] == [m.sop_uid for m in matches]
    assert [x["Study Instance UID"] for x in listed] == [m.study_uid for m in matches]
    assert [x["Series Instance UID"] for x in listed] == [m.series_uid for m in matches]
    # in the query's study and patient (from its own header), in a series of its own
    assert sr.StudyInstanceUID == query.StudyInstanceUID and sr.SeriesInstanceUID != query.SeriesInstanceUID
    assert (sr.PatientName, sr.PatientID) == (query.PatientName, query.PatientID)
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.get("TextValue") for i in sr.ContentSequence}
    assert texts["Algorithm Name"] == ABOUT.model_id and texts["Algorithm Version"] == ABOUT.fingerprint
    assert texts["Query kind"] == "image" and texts["Comment"] == NOT_FOR_DIAGNOSIS
    assert "PixelData" not in sr


def test_a_region_query_is_recorded() -> None:
    about = About(ABOUT.model_id, ABOUT.fingerprint, "image", region="x,y,w,h = 16,16,64,48")
    sr = build_sr(_query(), _matches(2), about)
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.get("TextValue") for i in sr.ContentSequence}
    assert texts["Query region"] == "x,y,w,h = 16,16,64,48"


def test_without_uids_no_other_patient_uid_is_in_the_file(tmp_path: Path) -> None:
    matches = _matches(4)
    private = [
        Match(m.rank, m.score, m.level, m.image_id) for m in matches
    ]  # what matches_of gives for include_uids=False
    data = _write(build_sr(_query(), private, ABOUT), tmp_path / "sr.dcm").read_bytes()
    for m in matches:
        for uid in (m.study_uid, m.series_uid, m.sop_uid):
            assert uid is not None and uid.encode() not in data
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    assert [x["medsearch image id"] for x in _items(sr)] == [str(m.image_id) for m in matches]
    assert "PertinentOtherEvidenceSequence" not in sr


def test_the_same_results_make_the_same_instance_so_a_retry_is_stored_once() -> None:
    query, matches = _query(), _matches(3)
    first, again = build_sr(query, matches, ABOUT), build_sr(query, matches, ABOUT)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    other = build_sr(query, matches[:2], ABOUT)
    assert other.SOPInstanceUID != first.SOPInstanceUID and other.SeriesInstanceUID == first.SeriesInstanceUID


def test_a_png_query_and_a_header_without_uids_are_clear_errors() -> None:
    buffer = io.BytesIO()
    PILImage.new("L", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(ExportNeedsDicomError, match="not a DICOM file"):
        header_of(buffer.getvalue())
    header = _query()
    del header.SOPClassUID
    with pytest.raises(ExportNeedsDicomError, match="SOPClassUID"):
        build_sr(header, [], ABOUT)


def test_export_is_off_until_configured_and_a_bad_address_says_the_form(tmp_path: Path) -> None:
    with pytest.raises(ExportOffError, match="MEDSEARCH_EXPORT_AE"):
        targets(Settings(data_dir=tmp_path))
    both = Settings(data_dir=tmp_path, export_ae="PACS@127.0.0.1:4242", export_dicomweb="http://pacs/dicom-web/")
    assert [(t.route, t.address) for t in targets(both)] == [
        ("cstore", "PACS@127.0.0.1:4242"),
        ("stow", "http://pacs/dicom-web"),
    ]
    assert [t.route for t in targets(both, "stow")] == ["stow"]
    with pytest.raises(ExportOffError, match="by C-STORE"):
        targets(Settings(data_dir=tmp_path, export_dicomweb="http://pacs/dicom-web"), "cstore")
    for bad in ("127.0.0.1:4242", "PACS@127.0.0.1", "PACS@host:0", "A_TITLE_LONGER_THAN_16@h:1"):
        with pytest.raises(SettingsError, match="AET@host:port"):
            AeAddress.parse(bad)
    assert AeAddress.parse("ORTHANC@[::1]:4242") == AeAddress("ORTHANC", "::1", 4242)
