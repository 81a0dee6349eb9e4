"""The indexing pipeline: archives, labels, idempotence, frames, model mismatch, reconcile, crashes."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import select

from indexer.pipeline import IndexOptions, IndexSummary, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.errors import IndexBusyError, ModelMismatchError
from retrieval.labels import load_labels
from retrieval.store.models import Failure, Image
from tests.conftest import make_settings, testdata_file

FILES = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "US1_UNCR.dcm", "SC_rgb.dcm", "JPEG-LL.dcm"]

# These tests are about what gets indexed, not the decode pool: they decode in the indexing process (starting the
# pool's processes costs ~3 s a run on 2 cores). The pool's own tests: corrupt files and a killed worker here, and
# tests/test_stages.py.
IN_PROCESS = IndexOptions(workers=0)


def _copy(names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(testdata_file(name), folder / name)
    return folder


def _keys(collection: Collection) -> dict[str, bytes]:
    with collection.catalog.sessions() as session:
        rows = session.execute(select(Image.instance_key, Image.id)).all()
    return {key: collection.catalog.vector(image_id).tobytes() for key, image_id in rows}  # type: ignore[union-attr]


def test_rerun_adds_nothing_and_skips_unopened(collection: Collection, tmp_path: Path) -> None:
    folder = _copy(FILES, tmp_path / "in")
    first = run_index(collection, [folder], IN_PROCESS)
    assert first.indexed == len(FILES) and first.failed == 0
    before = _keys(collection)
    second = run_index(collection, [folder], IN_PROCESS)
    assert (second.indexed, second.skipped, second.duplicates) == (0, len(FILES), 0)
    assert _keys(collection) == before
    # a copy of a file under another name is the same instance: nothing new either
    shutil.copy(folder / "CT_small.dcm", folder / "CT_copy.dcm")
    third = run_index(collection, [folder], IN_PROCESS)
    assert (third.indexed, third.duplicates, third.skipped) == (0, 1, len(FILES))


def test_zip_and_tar_archives_read_in_place_and_unsafe_members_refused(collection: Collection, tmp_path: Path) -> None:
    zpath, tpath = tmp_path / "a.zip", tmp_path / "b.tar.gz"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(testdata_file("CT_small.dcm"), "study/ct.dcm")
        zf.writestr("../evil.dcm", testdata_file("MR_small.dcm").read_bytes())
        zf.writestr("/abs.dcm", testdata_file("MR_small.dcm").read_bytes())
        zf.writestr("notes.txt", "ignored sidecar")
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(testdata_file("US1_UNCR.dcm"), "series/us.dcm")
        info = tarfile.TarInfo("../../etc/evil.dcm")
        payload = testdata_file("SC_rgb.dcm").read_bytes()
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("series/link.dcm")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    summary = run_index(collection, [zpath, tpath], IN_PROCESS)
    assert summary.indexed == 2
    with collection.catalog.sessions() as session:
        uris = set(session.scalars(select(Image.source_uri)))
        failures = {f.source_uri: f.code for f in session.scalars(select(Failure))}
    assert uris == {f"{zpath.resolve()}!/study/ct.dcm", f"{tpath.resolve()}!/series/us.dcm"}
    assert failures == {
        f"{zpath.resolve()}!/../evil.dcm": "unsafe_path",
        f"{zpath.resolve()}!//abs.dcm": "unsafe_path",
        f"{tpath.resolve()}!/../../etc/evil.dcm": "unsafe_path",
        f"{tpath.resolve()}!/series/link.dcm": "unsupported_entry",
    }
    assert run_index(collection, [zpath, tpath], IN_PROCESS).indexed == 0


def test_corrupt_files_are_recorded_and_the_rest_indexed(collection: Collection, tmp_path: Path) -> None:
    folder = _copy(FILES, tmp_path / "in")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "garbage.dcm").write_bytes(os.urandom(5000))
    good = testdata_file("CT_small.dcm").read_bytes()
    (folder / "cut.dcm").write_bytes(good[: len(good) - 3000])
    summary = run_index(collection, [folder], IndexOptions(workers=2))
    assert summary.indexed == len(FILES)
    assert summary.failed == 3
    codes = {Path(f.uri).name: f.code for f in summary.failures}
    assert codes["empty.dcm"] == "decode_error" and set(codes) == {"empty.dcm", "garbage.dcm", "cut.dcm"}
    assert all(f.reason for f in summary.failures)


def test_labels_csv_and_jsonl_are_stored_and_returned(collection: Collection, tmp_path: Path) -> None:
    folder = _copy(FILES[:3], tmp_path / "in")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,report\nin/CT_small.dcm,ct-head,axial slice\n")
    import pydicom

    mr_uid = pydicom.dcmread(folder / "MR_small.dcm", stop_before_pixels=True).SOPInstanceUID
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(f'{{"sop_instance_uid": "{mr_uid}", "label": "mr", "report": "T1 brain"}}\n')
    run_index(collection, [folder], IndexOptions(labels=load_labels(csv_path), workers=0))
    hits = engine.search(collection, engine.embed_image(collection, (folder / "CT_small.dcm").read_bytes()), k=3)
    assert hits[0].as_dict()["label"] == "ct-head" and hits[0].as_dict()["report"] == "axial slice"
    # labels given on a re-run reach images indexed earlier
    run_index(collection, [folder], IndexOptions(labels=load_labels(jsonl), workers=0))
    with collection.catalog.sessions() as session:
        labels = dict(session.execute(select(Image.sop_instance_uid, Image.label)).all())
    assert labels[mr_uid] == "mr"
    assert sorted(v for v in labels.values() if v) == ["ct-head", "mr"]


def test_all_frames_policy_gives_one_row_per_frame(collection: Collection, tmp_path: Path) -> None:
    folder = _copy(["emri_small.dcm"], tmp_path / "in")
    assert run_index(collection, [folder], IN_PROCESS).indexed == 1
    summary = run_index(collection, [folder / "emri_small.dcm"], IndexOptions(frames="all", workers=0))
    assert summary.skipped == 1  # the file was processed already; remove it to re-index with every frame
    collection.catalog.remove(collection.catalog.find_ids(source_prefix=str(folder.resolve())))
    summary = run_index(collection, [folder], IndexOptions(frames="all", workers=0))
    with collection.catalog.sessions() as session:
        frames = sorted(session.scalars(select(Image.frame)))
    assert summary.indexed == 10 and frames == list(range(1, 11))


def test_model_mismatch_is_a_clear_error(collection: Collection, tmp_path: Path) -> None:
    run_index(collection, [_copy(FILES[:2], tmp_path / "in")], IN_PROCESS)
    other_model = build_standin_model(tmp_path / "other-model", seed=1)
    other = Collection(make_settings(collection.settings.data_dir, other_model))
    with pytest.raises(ModelMismatchError, match="MEDSEARCH_MODEL") as info:
        engine.embed_text(other, "chest")
    assert str(collection.settings.model) in str(info.value)
    with pytest.raises(ModelMismatchError):
        run_index(other, [tmp_path / "in"], IN_PROCESS)


@pytest.mark.slow  # a stand-in at MedSigLIP's real width 1152
def test_real_width_1152_end_to_end(tmp_path: Path) -> None:
    model = build_standin_model(tmp_path / "wide", width=1152, layers=1, heads=16)
    col = Collection(make_settings(tmp_path / "data", model))
    folder = _copy(FILES[:3], tmp_path / "in")
    assert run_index(col, [folder]).indexed == 3
    assert col.index is not None and col.index.width == 1152
    assert faiss.read_index(str(col.settings.index_path)).d == 1152
    assert col.catalog.fingerprint().width == 1152  # type: ignore[union-attr]
    hits = engine.search(col, engine.embed_image(col, (folder / "MR_small.dcm").read_bytes()), k=3)
    assert hits[0].image.source_uri.endswith("MR_small.dcm") and hits[0].score > 0.999
    assert len(engine.search(col, engine.embed_text(col, "brain"), k=3)) == 3


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")  # the FAISS file itself is damaged here
def test_index_reconciles_with_the_store(collection: Collection, tmp_path: Path, tiny_model: Path) -> None:
    run_index(collection, [_copy(FILES, tmp_path / "in")], IN_PROCESS)
    index_file = collection.settings.index_path
    ids = collection.catalog.all_ids()
    # 1) index file lost -> rebuilt from stored vectors
    index_file.unlink()
    reopened = Collection(make_settings(collection.settings.data_dir, tiny_model))
    assert reopened.reconcile_report is not None and reopened.reconcile_report.rebuilt
    assert np.array_equal(reopened.index.ids(), ids)  # type: ignore[union-attr]
    reopened.save_index()
    # 2) index behind the store (killed before the index was saved) -> topped up
    behind = faiss.read_index(str(index_file))
    behind.remove_ids(ids[:2])
    faiss.write_index(behind, str(index_file))
    topped = Collection(make_settings(collection.settings.data_dir, tiny_model))
    assert topped.reconcile_report.added == 2 and np.array_equal(topped.index.ids(), ids)  # type: ignore[union-attr]
    topped.save_index()
    # 3) rows removed from the store but still in the file -> dropped
    collection.catalog.remove([int(ids[0])])
    trimmed = Collection(make_settings(collection.settings.data_dir, tiny_model))
    assert trimmed.reconcile_report.removed == 1  # type: ignore[union-attr]
    assert np.array_equal(trimmed.index.ids(), ids[1:])  # type: ignore[union-attr]
    # 4) a corrupt index file -> rebuilt, never a crash
    index_file.write_bytes(b"not a faiss index")
    rebuilt = Collection(make_settings(collection.settings.data_dir, tiny_model))
    assert rebuilt.reconcile_report.rebuilt and rebuilt.index.ntotal == len(ids) - 1  # type: ignore[union-attr]


def test_one_writer_at_a_time(collection: Collection, tmp_path: Path) -> None:
    with collection.writer_lock(), pytest.raises(IndexBusyError):
        run_index(collection, [_copy(FILES[:1], tmp_path / "in")])


def test_exclude_same_patient_for_an_uploaded_dicom(collection: Collection, tmp_path: Path) -> None:
    folder = _copy(["RG1_UNCI.dcm", "RG1_J2KI.dcm", "CT_small.dcm", "MR_small.dcm"], tmp_path / "in")
    run_index(collection, [folder], IN_PROCESS)
    query = engine.embed_image(collection, (folder / "RG1_UNCI.dcm").read_bytes())
    assert query.patient_hash and len(query.patient_hash) == 64
    everything = engine.search(collection, query, k=10)
    others = engine.search(collection, query, k=10, exclude_same_patient=True)
    assert {h.image.modality for h in everything} >= {"CR"}
    assert "CR" not in {h.image.modality for h in others} and len(others) == 2


def _worker_pids() -> list[int]:
    import multiprocessing

    return [p.pid for p in multiprocessing.active_children() if p.pid is not None]


@pytest.mark.slow
@pytest.mark.backends("sqlite-faiss")  # about decode workers, not the store: once is enough
def test_a_worker_killed_mid_run_costs_nothing(
    collection: Collection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The OOM killer (or a crashing decoder) takes out a worker: its files are retried, none is lost."""
    names = [
        "RG1_UNCI.dcm",
        "RG1_UNCR.dcm",
        "RG3_UNCI.dcm",
        "RG3_UNCR.dcm",
        "MR2_UNCI.dcm",
        "MR2_UNCR.dcm",
        "US1_UNCI.dcm",
        "US1_UNCR.dcm",
        "CT_small.dcm",
        "MR_small.dcm",
        "693_UNCI.dcm",
        "693_UNCR.dcm",
    ]
    folder = _copy(names, tmp_path / "in")
    result: list[IndexSummary] = []
    thread = threading.Thread(
        target=lambda: result.append(run_index(collection, [folder], IndexOptions(workers=2, batch_size=2)))
    )
    caplog.set_level(logging.WARNING, logger="indexer.stages.decode")
    earlier = set(_worker_pids())  # children an earlier test left running are not this run's decode workers
    thread.start()
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and not killed:
        pids = [pid for pid in _worker_pids() if pid not in earlier]
        if pids:
            # at once: a worker exists only once files were submitted to it, and none can be decoded yet
            # (a spawned worker still starts Python), so every submitted file is in flight when it dies
            os.kill(pids[0], signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed and result, "the run did not finish"
    retried = [int(m.group(1)) for r in caplog.records if (m := re.search(r"retrying (\d+) in-flight", r.getMessage()))]
    assert retried and retried[0] >= 1, f"the killed worker's files were never retried: {caplog.text!r}"
    summary = result[0]
    assert summary.failed == 0 and summary.indexed + summary.duplicates == len(names)
    assert collection.index is not None and collection.index.ntotal == summary.indexed
