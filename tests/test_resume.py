"""Crash safety of `medsearch index`: re-runs add nothing; SIGKILL then re-run equals an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from tests.conftest import make_settings, testdata_file

MEDSEARCH = Path(sys.executable).parent / "medsearch"
WORKERS = 1  # a real decode worker process: the kill must take the whole process group down
BATCH = 4  # small batches: many transactions to interrupt
RUN_TIMEOUT = 150.0

# Real DICOMs from pydicom's test corpus. Several share a SOP Instance UID (MR_small_*, the dicomdir series):
# the first one met wins and the rest are duplicates, which a resumed run must resolve the same way.
PLAIN = (
    "CT_small.dcm",
    "ExplVR_BigEnd.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "JPEGLSNearLossless_08.dcm",
    "JPEGLSNearLossless_16.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "SC_jpeg_no_color_transform_2.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_jpeg.dcm",
    "examples_overlay.dcm",
    "examples_palette.dcm",
    "examples_rgb_color.dcm",
    "examples_ybr_color.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
)
SERIES_FOLDERS = ("77654033", "98892001")  # dicomdirtests patients, copied as folder trees
ARCHIVED_FOLDER = "98892003"  # another dicomdirtests patient, read from inside a zip archive
BROKEN = ("MR_truncated.dcm", "JPEG-lossy.dcm", "rtplan.dcm")  # decode error, decode error, no pixel data
GARBAGE = b"this is not a medical image\n" * 64


# -- corpus and processes -----------------------------------------------------------------------
def build_corpus(root: Path) -> Path:
    """A fixed folder of real DICOMs: plain files, folder trees, broken files and a zip with members."""
    plain = root / "plain"
    plain.mkdir(parents=True)
    for name in PLAIN:
        shutil.copyfile(testdata_file(name), plain / name)
    for folder in SERIES_FOLDERS:
        shutil.copytree(testdata_file(folder), root / "series" / folder)
    broken = root / "broken"
    broken.mkdir()
    for name in BROKEN:
        shutil.copyfile(testdata_file(name), broken / name)
    (broken / "garbage.dcm").write_bytes(GARBAGE)
    with zipfile.ZipFile(root / "archive.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        archived = testdata_file(ARCHIVED_FOLDER)
        for path in sorted(p for p in archived.rglob("*") if p.is_file()):
            zf.write(path, f"series/{path.relative_to(archived.parent).as_posix()}")
        zf.write(testdata_file("CT_small.dcm"), "copies/CT_small.dcm")  # same instance as plain/CT_small.dcm
        zf.write(testdata_file("MR_truncated.dcm"), "broken/MR_truncated.dcm")
        zf.writestr("broken/garbage.dcm", GARBAGE)
        zf.writestr("notes.txt", "sidecar text, never an image")
    return root


def medsearch_env(model: Path, save_seconds: float | None = None) -> dict[str, str]:
    """The environment of a child `medsearch`: the tiny model, offline, no MEDSEARCH_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")}
    env.update(MEDSEARCH_MODEL=str(model), MEDSEARCH_DEVICE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if save_seconds is not None:
        env["MEDSEARCH_INDEX_SAVE_SECONDS"] = str(save_seconds)
    return env


def index_command(corpus: Path, data_dir: Path, workers: int = WORKERS, batch: int = BATCH) -> list[str]:
    """`medsearch index` as the user types it, with a JSON summary (exit 0 although broken files fail)."""
    return [
        *(str(MEDSEARCH), "index", str(corpus), "--workers", str(workers), "--batch-size", str(batch)),
        *("-q", "--json", "--allow-failures", "--data-dir", str(data_dir)),  # the corpus has broken files
    ]


def group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in a process group."""
    alive: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group (main process, decode workers, resource tracker).

    Only while the group id is certainly still ours: its leader not yet reaped, or members still alive.
    """
    if proc.returncode is None or group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_group_gone(pgid: int) -> None:
    """No process of the group survives the kill (orphans would keep decoding and hold files)."""
    deadline = time.monotonic() + 10
    while (left := group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind after SIGKILL: {left}"


def run_medsearch(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run a `medsearch` command to completion in its own process group; its JSON output."""
    with log.open("ab") as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
            assert_group_gone(proc.pid)  # a finished run leaves no worker behind either
        finally:
            kill_group(proc)
    assert proc.returncode == 0, f"{args[1]} failed ({proc.returncode}):\n{log.read_text()[-3000:]}"
    report: dict[str, Any] = json.loads(stdout)
    return report


# -- reading a data folder ----------------------------------------------------------------------
def connect_ro(data_dir: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the data folder's SQLite database."""
    return sqlite3.connect(f"file:{data_dir / 'medsearch.db'}?mode=ro", uri=True, timeout=timeout)


def progress(data_dir: Path) -> tuple[bool, int] | None:
    """(model recorded, committed image rows) as seen by a reader during a run; None if not readable yet."""
    if not (data_dir / "medsearch.db").exists():
        return None
    try:
        con = connect_ro(data_dir, timeout=0.2)
        try:
            model = con.execute("SELECT COUNT(*) FROM index_info WHERE key = 'model'").fetchone()[0]
            images = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, schema half-made, or busy
        return None
    return bool(model), int(images)


def committed(data_dir: Path) -> tuple[int, set[int]]:
    """(image rows, vector ids) committed in a data folder, however early its run was killed."""
    if not (data_dir / "medsearch.db").exists():
        return 0, set()
    con = connect_ro(data_dir)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = con.execute("SELECT COUNT(*) FROM images").fetchone()[0] if "images" in tables else 0
        ids = {row[0] for row in con.execute("SELECT image_id FROM vectors")} if "vectors" in tables else set()
    finally:
        con.close()
    return int(rows), ids


@dataclass
class Snapshot:
    """What a data folder holds, keyed by instance_key so that runs with different ids compare."""

    ids: dict[str, int]
    rows: dict[str, tuple[Any, ...]]  # metadata columns (no id, timestamps or salted patient hash)
    vectors: dict[str, npt.NDArray[np.float32]]
    patients: frozenset[frozenset[str]]  # keys grouped by patient hash (each folder has its own salt)
    sources: dict[str, tuple[Any, ...]]
    failures: dict[str, tuple[str, str]]
    info: dict[str, str]
    schema: frozenset[str]  # tables and indexes


VOLATILE = {"id", "indexed_at", "patient_hash", "accession_hash"}  # hashes: each folder has its own salt


def snapshot(data_dir: Path) -> Snapshot:
    """Read every table, checking the invariants that hold after any run, killed or not."""
    con = connect_ro(data_dir)
    try:
        dupes = con.execute("SELECT instance_key FROM images GROUP BY instance_key HAVING COUNT(*) > 1").fetchall()
        assert not dupes, f"duplicate instance keys: {dupes}"
        orphans = con.execute(
            "SELECT COUNT(*) FROM images LEFT JOIN vectors ON vectors.image_id = images.id "
            "WHERE vectors.image_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0, f"{orphans} images without a vector"
        stray = con.execute(
            "SELECT COUNT(*) FROM vectors LEFT JOIN images ON images.id = vectors.image_id WHERE images.id IS NULL"
        ).fetchone()[0]
        assert stray == 0, f"{stray} vectors without an image"
        columns = [row[1] for row in con.execute("PRAGMA table_info(images)") if row[1] not in VOLATILE]
        ids: dict[str, int] = {}
        rows: dict[str, tuple[Any, ...]] = {}
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        by_patient: dict[str | None, set[str]] = {}
        query = f"SELECT images.id, images.patient_hash, vectors.vector, {', '.join(f'images.{c}' for c in columns)} "
        for image_id, patient, blob, *meta in con.execute(query + "FROM images JOIN vectors ON image_id = images.id"):
            key = meta[columns.index("instance_key")]
            ids[key] = image_id
            rows[key] = tuple(meta)
            vectors[key] = np.frombuffer(blob, dtype=np.float32)
            by_patient.setdefault(patient, set()).add(key)
        sources = {
            uri: (size, mtime, status, images)
            for uri, size, mtime, status, images in con.execute("SELECT uri, size, mtime, status, images FROM sources")
        }
        failures = {
            uri: (code, reason) for uri, code, reason in con.execute("SELECT source_uri, code, reason FROM failures")
        }
        info = dict(con.execute("SELECT key, value FROM index_info").fetchall())
        schema = frozenset(row[0] for row in con.execute("SELECT name FROM sqlite_master"))
    finally:
        con.close()
    patients = frozenset(frozenset(keys) for hashed, keys in by_patient.items() if hashed is not None)
    snap = Snapshot(ids, rows, vectors, patients, sources, failures, info, schema)
    check_sources(snap, columns)
    return snap


def check_sources(snap: Snapshot, columns: list[str]) -> None:
    """Sources, failures and images tell the same story: every image and failure is accounted for once."""
    uri_at = columns.index("source_uri")
    per_source: dict[str, int] = {}
    for row in snap.rows.values():
        per_source[row[uri_at]] = per_source.get(row[uri_at], 0) + 1
    for uri, count in per_source.items():
        assert uri in snap.sources, f"image from unrecorded source {uri}"
        assert snap.sources[uri][2] == "indexed", (uri, snap.sources[uri])
        assert snap.sources[uri][3] == count, (uri, snap.sources[uri], count)
    assert sum(s[3] for s in snap.sources.values()) == len(snap.rows)
    failed = {uri for uri, s in snap.sources.items() if s[2] == "failed"}
    assert failed == set(snap.failures), failed ^ set(snap.failures)


def faiss_file(data_dir: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
    """Ids and vectors of the FAISS file on disk (None if there is none yet)."""
    path = data_dir / "index.faiss"
    if not path.exists():
        return None
    index = faiss.read_index(str(path))
    assert isinstance(index, faiss.IndexIDMap2), type(index)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    return ids, np.asarray(vectors, dtype=np.float32)


def check_index(data_dir: Path, snap: Snapshot, model: Path) -> None:
    """The saved FAISS file and the re-opened collection hold exactly the stored vectors, once each."""
    saved = faiss_file(data_dir)
    assert saved is not None, "no FAISS file after a completed run"
    ids, vectors = saved
    assert len(np.unique(ids)) == len(ids), "an id is in the FAISS file twice"
    by_id = {image_id: key for key, image_id in snap.ids.items()}
    assert sorted(ids.tolist()) == sorted(by_id), "FAISS file ids differ from the database's"
    for image_id, vector in zip(ids.tolist(), vectors, strict=True):
        assert np.array_equal(vector, snap.vectors[by_id[image_id]]), f"FAISS vector of id {image_id} differs"
    collection = Collection(make_settings(data_dir, model))
    try:
        report = collection.reconcile_report
        assert report is not None and report.loaded and not report.rebuilt, report
        assert report.added == report.removed == 0, report
        assert collection.index is not None
        assert np.array_equal(collection.index.ids(), collection.catalog.all_ids())
    finally:
        collection.close()


def check_stats(data_dir: Path, env: dict[str, str], log: Path, expected: Snapshot) -> None:
    """`medsearch stats --json` agrees with itself and with the expected contents."""
    stats = run_medsearch([str(MEDSEARCH), "stats", "--json", "--data-dir", str(data_dir)], env, log)
    assert stats["images"] == stats["vectors"] == stats["index_vectors"] == len(expected.rows), stats
    assert stats["sources"] == len(expected.sources), stats
    assert stats["failures"] == len(expected.failures), stats


def assert_same(got: Snapshot, want: Snapshot) -> None:
    """Same rows, vectors, sources and failures as the reference (ids may differ)."""
    assert set(got.rows) == set(want.rows), {
        "missing": sorted(set(want.rows) - set(got.rows)),
        "extra": sorted(set(got.rows) - set(want.rows)),
    }
    for key, row in want.rows.items():
        assert got.rows[key] == row, (key, got.rows[key], row)
        # Same image, same model; a different batch split may change float rounding, nothing more.
        np.testing.assert_allclose(got.vectors[key], want.vectors[key], rtol=0, atol=1e-5, err_msg=key)
    assert got.patients == want.patients
    assert got.sources == want.sources
    assert got.failures == want.failures
    assert set(got.info) == set(want.info)
    assert got.info["model"] == want.info["model"]
    assert got.schema == want.schema, {"missing": sorted(want.schema - got.schema)}


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixed input folder shared by every run of this module (URIs are absolute: same for all)."""
    return build_corpus(tmp_path_factory.mktemp("resume-corpus"))


@dataclass
class Reference:
    """An uninterrupted run of `medsearch index` over the corpus."""

    data_dir: Path
    summary: dict[str, Any]
    snap: Snapshot
    seconds: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_model: Path) -> Reference:
    """Index the corpus once without interruption; every killed run must end up identical to it."""
    base = tmp_path_factory.mktemp("resume-reference")
    data_dir = base / "data"
    env = medsearch_env(tiny_model)
    t0 = time.monotonic()
    summary = run_medsearch(index_command(corpus, data_dir), env, base / "stderr.log")
    seconds = time.monotonic() - t0
    snap = snapshot(data_dir)
    print(f"reference run: {seconds:.1f} s, {summary}")
    return Reference(data_dir, summary, snap, seconds)


# -- tests --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.e2e
def test_uninterrupted_run_is_consistent(reference: Reference, tiny_model: Path, tmp_path: Path) -> None:
    """The reference itself: a real mix of images, duplicates and failures, and FAISS == SQLite."""
    snap, summary = reference.snap, reference.summary
    assert len(snap.rows) >= 30, summary
    assert summary["indexed"] == len(snap.rows)
    assert summary["duplicates"] >= 10, summary
    assert summary["failed"] == len(snap.failures) >= 5, summary
    assert summary["not_images"] >= 1, summary  # the RT plan: skipped by its SOP class now, no longer a failure
    assert summary["sources"] == len(snap.sources) >= 60, summary
    assert any("archive.zip!/" in uri for uri in snap.sources)
    assert any("archive.zip!/" in uri for uri in snap.failures)
    check_index(reference.data_dir, snap, tiny_model)
    check_stats(reference.data_dir, medsearch_env(tiny_model), tmp_path / "stats.log", snap)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.e2e
def test_rerun_adds_zero_rows(reference: Reference, corpus: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Re-running `medsearch index` on the same input (even with other options) adds 0 rows, changes nothing."""
    data_dir = tmp_path / "data"
    shutil.copytree(reference.data_dir, data_dir)
    index_bytes = (data_dir / "index.faiss").read_bytes()
    env = medsearch_env(tiny_model)
    summary = run_medsearch(index_command(corpus, data_dir, workers=0, batch=16), env, tmp_path / "stderr.log")
    assert summary["indexed"] == 0, summary
    assert summary["failed"] == 0 and summary["duplicates"] == 0, summary
    assert summary["skipped"] == summary["sources"] == reference.summary["sources"], summary
    after = snapshot(data_dir)
    assert after.ids == reference.snap.ids  # not even renumbered
    assert_same(after, reference.snap)
    assert (data_dir / "index.faiss").read_bytes() == index_bytes
    check_index(data_dir, after, tiny_model)
    check_stats(data_dir, env, tmp_path / "stderr.log", reference.snap)


@dataclass(frozen=True)
class KillPoint:
    """When to SIGKILL a run: a condition on what a reader sees in the database, plus a random delay."""

    name: str
    when: Callable[[tuple[bool, int] | None, float, int], bool]  # (progress, seconds since start, total) -> kill?
    save_seconds: float | None = None  # MEDSEARCH_INDEX_SAVE_SECONDS for the killed run (0: save every batch)
    jitter: float = 0.15  # at most this many seconds of seeded random delay once the condition holds


def rows_at_least(fraction: float, minus: int = 0) -> Callable[[tuple[bool, int] | None, float, int], bool]:
    """Kill once at least max(1, fraction * total - minus) image rows are committed."""

    def reached(seen: tuple[bool, int] | None, _elapsed: float, total: int) -> bool:
        return seen is not None and seen[1] >= max(1, int(fraction * total) - minus)

    return reached


# save_seconds=0 saves the FAISS file after every batch (the file is then close behind the database); the default
# (30 s) never saves it before the end of these short runs (the re-run must rebuild it from the stored vectors).
KILL_POINTS = [
    KillPoint("startup-imports", lambda _seen, elapsed, _total: elapsed >= 1.0, jitter=0.5),
    KillPoint("model-recorded-0-rows", lambda seen, _elapsed, _total: seen is not None and seen[0]),
    KillPoint("first-rows", rows_at_least(0.0), save_seconds=0),
    KillPoint("half-rows", rows_at_least(1 / 2)),
    KillPoint("most-rows", rows_at_least(3 / 4), save_seconds=0),
    KillPoint("all-rows-final-save", rows_at_least(1.0), jitter=0.3),  # every row committed, process not done
]


@dataclass
class Kill:
    """What a killed run left behind."""

    seconds: float
    rows: int
    faiss_rows: int | None
    temp_files: int  # half-written FAISS saves left by the kill


def run_and_kill(corpus: Path, data_dir: Path, model: Path, point: KillPoint, total: int, log: Path) -> Kill:
    """Start `medsearch index`, wait for the kill point, SIGKILL its whole process group."""
    jitter = random.Random(point.name).uniform(0.0, point.jitter)  # lands anywhere inside a batch
    env = medsearch_env(model, point.save_seconds)
    with log.open("ab") as err:
        proc = subprocess.Popen(
            index_command(corpus, data_dir), env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        start = time.monotonic()
        try:
            while not point.when(progress(data_dir), time.monotonic() - start, total):
                assert proc.poll() is None, (
                    f"the run ended before kill point {point.name!r}:\n{log.read_text()[-2000:]}"
                )
                assert time.monotonic() - start < RUN_TIMEOUT, f"kill point {point.name!r} never reached"
                time.sleep(0.02)
            time.sleep(jitter)
            assert proc.poll() is None, f"the run ended before kill point {point.name!r} (+{jitter:.2f} s)"
            kill_group(proc)
            assert_group_gone(proc.pid)
        finally:
            kill_group(proc)
    seconds = time.monotonic() - start
    assert proc.returncode == -signal.SIGKILL
    rows, stored = committed(data_dir)
    saved = faiss_file(data_dir)
    if saved is not None:  # the file may lag behind the database but never run ahead of it
        assert set(saved[0].tolist()) <= stored, "the FAISS file holds ids the database never committed"
    return Kill(seconds, rows, None if saved is None else len(saved[0]), len(list(data_dir.glob(".index-*.tmp"))))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
@pytest.mark.e2e
def test_sigkill_then_rerun_equals_uninterrupted(
    point: KillPoint, reference: Reference, corpus: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-run, re-run: exactly the reference's rows and vectors, FAISS and SQLite agreeing."""
    data_dir = tmp_path / "data"
    log = tmp_path / "stderr.log"
    total = len(reference.snap.rows)
    kill = run_and_kill(corpus, data_dir, tiny_model, point, total, log)
    if kill.rows:
        partial = snapshot(data_dir)  # a killed run leaves a consistent prefix: no half-written batch
        assert len(partial.rows) == kill.rows <= total
        for key, row in partial.rows.items():
            assert row == reference.snap.rows[key], key
            np.testing.assert_allclose(partial.vectors[key], reference.snap.vectors[key], rtol=0, atol=1e-5)
        for uri, source in partial.sources.items():
            assert source == reference.snap.sources[uri], uri
    env = medsearch_env(tiny_model)
    summary = run_medsearch(index_command(corpus, data_dir), env, log)
    assert summary["indexed"] == total - kill.rows, (summary, kill)
    after = snapshot(data_dir)
    assert_same(after, reference.snap)
    check_index(data_dir, after, tiny_model)
    check_stats(data_dir, env, log, reference.snap)
    print(
        f"{point.name}: killed after {kill.seconds:.1f} s with {kill.rows}/{total} rows committed, "
        f"FAISS file {kill.faiss_rows} vectors, {kill.temp_files} temp files; "
        f"re-run indexed {summary['indexed']}, skipped {summary['skipped']}"
    )


# -- states a SIGKILL can leave on a folder's first open (too short to hit reliably with a real kill) ---------------
def test_schema_left_half_made_by_a_kill_is_completed(tmp_path: Path, tiny_model: Path) -> None:
    """Killed between the CREATE TABLEs and the CREATE INDEXes: the next open must create the missing indexes."""
    from sqlalchemy import create_engine
    from sqlalchemy.schema import CreateTable

    from retrieval.store.models import Base

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = create_engine(f"sqlite:///{data_dir / 'medsearch.db'}")
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(CreateTable(table))
    engine.dispose()
    Collection(make_settings(data_dir, tiny_model)).close()
    wanted = {index.name for table in Base.metadata.sorted_tables for index in table.indexes}
    con = connect_ro(data_dir)
    try:
        have = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        con.close()
    assert wanted <= have, sorted(wanted - have)


def test_salt_file_left_empty_by_a_kill_is_not_used(tmp_path: Path, tiny_model: Path) -> None:
    """Killed between creating the salt file and writing it: never hash PatientIDs with an empty key."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "patient-salt").write_bytes(b"")
    try:
        collection = Collection(make_settings(data_dir, tiny_model))
    except MedsearchError:
        return  # refusing with a clear error is acceptable too
    collection.close()
    assert len(collection.salt) >= 32, collection.salt
