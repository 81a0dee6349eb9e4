"""CT window presets for images received over C-STORE with no DICOMweb server, and no patient identifier on disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest

from indexer.pipeline import IndexOptions
from indexer.spool import Spool, SpoolWorker
from retrieval.collection import Collection
from retrieval.imaging.windowing import CT_PRESETS
from retrieval.render import render, render_indexed
from retrieval.sources.read import READERS, read_source
from retrieval.sources.received import kept_path
from tests.conftest import make_settings, testdata_file
from tests.orthanc import encode, with_new_uids
from tests.test_pacs_listen import MEDSEARCH

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "PID-314159", "PatientBirthDate": "19410526"}


def _received(collection: Collection, name: str) -> tuple[bytes, pydicom.Dataset]:
    """One instance, with identifiers, through the spool as `medsearch listen` receives it."""
    ds = with_new_uids(testdata_file(name))
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.InstitutionName = "St Elsewhere"
    data = encode(ds)
    spool = Spool(collection.settings.resolved_spool_dir)
    spool.put(data)
    assert SpoolWorker(collection, spool, IndexOptions(workers=0), batch=8, poll_seconds=1).drain_once() == 1
    assert spool.pending(10) == []  # the spooled file, identifiers included, is gone
    return data, ds


@pytest.mark.backends("sqlite-faiss")
@pytest.mark.e2e  # `medsearch remove` as a subprocess
def test_ct_presets_render_without_a_pacs_and_nothing_identifies_the_patient(collection: Collection) -> None:
    settings = collection.settings
    assert not settings.dicomweb_url
    data, _ = _received(collection, "CT_small.dcm")
    (image,) = collection.catalog.images([int(i) for i in collection.catalog.all_ids()]).values()
    for preset in CT_PRESETS:  # the same picture as from the bytes as received
        shown = render_indexed(image, 256, settings, preset)
        assert shown.png == render(data, 256, settings, window=preset).png, preset
    kept = pydicom.dcmread(kept_path(image.source_uri, settings))
    leaked = [k for k in (*IDENTIFIERS, "InstitutionName", "StudyInstanceUID", "SOPInstanceUID") if k in kept]
    assert leaked == []
    for path in settings.data_dir.rglob("*"):  # database, cache, kept pixels: none holds an identifier
        if path.is_file():
            content = path.read_bytes()
            found = [v for v in (*IDENTIFIERS.values(), "St Elsewhere") if v.encode() in content]
            assert not found, f"{path} holds {found}"
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(settings.data_dir), "MEDSEARCH_MODEL": settings.model}
    run = subprocess.run([MEDSEARCH, "remove", "--id", str(image.id)], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "removed 1 images" in run.stdout, run.stdout + run.stderr
    assert not kept_path(image.source_uri, settings).exists()  # the kept pixels go with the image


@pytest.mark.backends("sqlite-faiss")
def test_only_ct_pixels_are_kept(collection: Collection) -> None:
    _received(collection, "MR_small.dcm")
    received = collection.settings.data_dir / "received"
    # an MR slice leaves only its series' planning facts (received/series/*.json: UIDs and geometry), no pixels
    kept = [p for p in received.rglob("*") if p.is_file() and p.parent != received / "series"]
    assert kept == []
    assert all(p.suffix == ".json" for p in received.rglob("*") if p.is_file())


def test_re_reads_go_by_uri_scheme(tmp_path: Path) -> None:
    assert set(READERS) == {"http", "https", "dicom"}
    plain = tmp_path / "x.dcm"
    plain.write_bytes(b"bytes")
    assert read_source(str(plain), make_settings(tmp_path, tmp_path)) == b"bytes"
