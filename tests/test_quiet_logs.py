"""Quiet logs: malformed-tag warnings are counted in the metrics, not printed; small IVF rebuilds do not warn."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pydicom
import pytest

from api.metrics import Metrics
from indexer.pipeline import IndexOptions, run_index
from retrieval import library_warnings
from retrieval.collection import Collection
from retrieval.imaging.dicom import decode_dicom, read_dataset
from retrieval.imaging.types import DecodeLimits
from retrieval.index.faiss_index import FaissIndex
from tests.conftest import SAMPLES, make_settings


def with_bad_uid() -> bytes:
    """A sample CT whose Study Instance UID is not a valid UI value (letters), as some archives hold."""
    ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    ds["StudyInstanceUID"].value = "1.2.3.abc"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_invalid_vr_warnings_are_counted_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    tally = library_warnings.install()
    before = tally.snapshot().get(("pydicom", "invalid_vr_UI"), 0)
    data = with_bad_uid()
    capfd.readouterr()
    for _ in range(3):  # as for three requests
        decoded = decode_dicom(data, "hash", limits=DecodeLimits())
        assert decoded.meta.study_instance_uid == "1.2.3.abc"
    printed = capfd.readouterr()
    assert "Invalid value" not in printed.err + printed.out
    assert tally.snapshot()[("pydicom", "invalid_vr_UI")] >= before + 3
    exposition = Metrics().render().body.decode()
    counted = [x for x in exposition.splitlines() if x.startswith("medsearch_library_warnings_total{")]
    line = next(x for x in counted if 'kind="invalid_vr_UI"' in x)  # other kinds may be counted by earlier tests
    assert 'library="pydicom"' in line and float(line.split()[-1]) >= 3
    assert "1.2.3.abc" not in exposition  # the value itself (an identifier) never reaches the metrics


def test_kinds_are_bounded() -> None:
    assert library_warnings.kind_of("Invalid value for VR UI: '1.2.abc'.") == "invalid_vr_UI"
    assert library_warnings.kind_of("End of file reached before delimiter") == "truncated"
    assert library_warnings.kind_of("Patient name 'DOE^JOHN' is odd") == "other"


def test_truncated_file_reason_has_no_placeholder_file_name() -> None:
    data = (SAMPLES / "RG1_J2KI.dcm").read_bytes()[:-1000]
    with pytest.raises(Exception, match="truncated DICOM file") as caught:
        read_dataset(data)
    assert "no filename" not in str(caught.value) and not str(caught.value).endswith("in file")


def test_small_ivf_rebuild_does_not_warn(tmp_path: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    col = Collection(make_settings(tmp_path / "data", tiny_model))
    run_index(col, [samples], IndexOptions(workers=0, batch_size=8))
    index = col.index
    assert isinstance(index, FaissIndex)
    capfd.readouterr()
    for nlist in (1, 2):
        assert index.rebuild(col.catalog, "ivf-sq8", nlist=nlist, nprobe=nlist) == 10
        assert index.describe()["params"]["nlist"] == nlist
    assert "WARNING clustering" not in capfd.readouterr().err
    col.close()
