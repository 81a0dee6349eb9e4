"""Store/index backends: reconcile, remove, rebuild, filtered search, concurrent writers, SIGKILL, per backend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.index.faiss_index import FaissIndex
from retrieval.index.milvus_index import EXACT_MAX, MilvusIndex
from retrieval.query import QueryVector
from retrieval.store.models import Image, Vector
from retrieval.store.repo import Filters
from tests.backends import TEST_SALT, Backend, PostgresServer
from tests.conftest import make_settings
from tests.test_pipeline import _copy
from tests.test_resume import assert_group_gone, kill_group, medsearch_env

MEDSEARCH = Path(sys.executable).parent / "medsearch"
FILES = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "US1_UNCR.dcm", "SC_rgb.dcm", "JPEG-LL.dcm"]


def _reopen(collection: Collection, save: bool = True) -> Collection:
    """The same data folder opened again, as a restarted process would (the old handle saved and closed first)."""
    if save:
        collection.save_index()
    collection.close()
    return Collection(make_settings(collection.settings.data_dir, Path(collection.settings.model)))


def _lose_index(collection: Collection) -> None:
    """What losing the derived index looks like on this backend: no FAISS file, or no Milvus collection."""
    index = collection.index
    if isinstance(index, MilvusIndex):
        index._client.drop_collection(index.name)
    else:
        collection.settings.index_path.unlink()


def _unit(rng: np.random.Generator, n: int, width: int) -> npt.NDArray[np.float32]:
    vecs = rng.normal(size=(n, width)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _synthetic(collection: Collection, modalities: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the given modalities and random unit vectors, written like the indexer does; (ids, vectors)."""
    index = collection.require_index()
    vecs = _unit(np.random.default_rng(seed), len(modalities), index.width)
    rows = [
        (
            Image(
                instance_key=f"synthetic-{seed}-{i}",
                kind="raster",
                modality=modality,
                study_date=date(2020, 1, 1 + i % 28),
                source_uri=f"/synthetic/{seed}/{i}.png",
                content_hash=f"{i:064x}",
            ),
            vecs[i],
        )
        for i, modality in enumerate(modalities)
    ]
    stored = collection.catalog.write_batch(rows)
    ids = np.asarray(stored, dtype=np.int64)
    index.add(ids, vecs)
    collection.save_index()
    return ids, vecs


# -- reconcile, remove, rebuild -------------------------------------------------------------------
@pytest.mark.backends("sqlite-faiss", "postgres-faiss", "milvus-lite")
def test_reconcile_tops_up_drops_extras_and_rebuilds(collection: Collection, tmp_path: Path) -> None:
    run_index(collection, [_copy(FILES, tmp_path / "in")], IndexOptions(workers=0))
    ids = collection.catalog.all_ids()
    assert len(ids) == len(FILES)
    # behind the store (killed before the index caught up): topped up
    assert collection.index is not None and collection.index.remove(ids[:2]) == 2
    collection.save_index()
    collection = _reopen(collection)
    report = collection.reconcile_report
    assert report is not None and report.loaded and (report.added, report.removed) == (2, 0)
    assert np.array_equal(collection.index.ids(), ids)  # type: ignore[union-attr]
    # rows removed from the store behind the index's back: dropped from it
    collection.catalog.remove([int(ids[0])])
    collection = _reopen(collection)
    assert (collection.reconcile_report.added, collection.reconcile_report.removed) == (0, 1)  # type: ignore[union-attr]
    assert np.array_equal(collection.index.ids(), ids[1:])  # type: ignore[union-attr]
    # the index lost altogether: rebuilt from the stored vectors
    collection.save_index()
    _lose_index(collection)
    collection = _reopen(collection, save=False)
    assert collection.reconcile_report is not None and collection.reconcile_report.rebuilt
    assert np.array_equal(collection.index.ids(), ids[1:])  # type: ignore[union-attr]
    for image_id in ids[1:]:
        query = engine.embed_id(collection, int(image_id))
        assert engine.search(collection, query, k=1)[0].image.id != image_id  # a pivot never finds itself
    collection.close()


@pytest.mark.backends("sqlite-faiss", "postgres-faiss", "milvus-lite")
def test_remove_and_rebuild_keep_search_exact(collection: Collection) -> None:
    ids, vecs = _synthetic(collection, ["CT"] * 40 + ["MR"] * 20)
    index = collection.index
    assert index is not None and index.ntotal == 60
    query = QueryVector(vector=vecs[3], kind="id")
    before = [(h.image.id, round(h.score, 5)) for h in engine.search(collection, query, k=10)]
    expected = ids[np.argsort(-(vecs @ vecs[3]), kind="stable")[:10]]
    assert [i for i, _ in before] == expected.tolist()
    gone = ids[[3, 7, 11]]
    assert collection.catalog.remove(gone.tolist()) == 3 and index.remove(gone) == 3
    assert index.remove(gone) == 0  # already gone
    assert index.ntotal == 57
    hits = engine.search(collection, query, k=57)
    assert len(hits) == 57 and not {h.image.id for h in hits} & set(gone.tolist())
    after_remove = [(h.image.id, round(h.score, 5)) for h in hits]
    assert index.rebuild(collection.catalog) == 57
    collection.save_index()
    assert [(h.image.id, round(h.score, 5)) for h in engine.search(collection, query, k=57)] == after_remove
    assert np.array_equal(index.ids(), collection.catalog.all_ids())


@pytest.mark.backends("sqlite-faiss", "postgres-faiss", "milvus-lite")
def test_filtered_search_returns_k_exact_matches(collection: Collection) -> None:
    """A 1%-selective filter still returns k hits, and exactly the exact filtered top-k (both Milvus paths)."""
    modalities = ["CT"] * (EXACT_MAX + 300) + ["MR"] * 25 + ["US"] * 200
    ids, vecs = _synthetic(collection, modalities, seed=1)
    rng = np.random.default_rng(7)
    labels = np.asarray(modalities)
    for wanted in ("MR", "CT", "US"):  # MR: 1% (exact path), CT: above EXACT_MAX (Milvus filter expression)
        pool = np.flatnonzero(labels == wanted)
        for _ in range(3):
            q = _unit(rng, 1, vecs.shape[1])[0]
            hits = engine.search(
                collection, QueryVector(vector=q, kind="text"), k=10, filters=Filters(modality=[wanted])
            )
            assert len(hits) == 10 and {h.image.modality for h in hits} == {wanted}
            sims = vecs[pool] @ q
            top = ids[pool][np.argsort(-sims, kind="stable")[:10]]
            assert [h.image.id for h in hits] == top.tolist()
            np.testing.assert_allclose([h.score for h in hits], np.sort(sims)[::-1][:10], atol=1e-5)
    few = engine.search(
        collection, QueryVector(vector=vecs[0], kind="id"), k=50, filters=Filters(modality=["MR"])
    )  # fewer matches than k: all of them
    assert len(few) == 25


@pytest.mark.backends("sqlite-faiss", "postgres-faiss", "milvus-lite")
def test_only_faiss_over_sqlite_searches_locally(collection: Collection, backend: Backend) -> None:
    """The service answers a quick search on its event loop only when nothing in it goes over a network
    (api/routes/search.py::_on_loop): FAISS over the SQLite file, and no index change under way."""
    _synthetic(collection, ["CT"] * 20)
    local = backend.name == "sqlite-faiss"
    assert collection.searches_locally() is local
    if local:
        index = collection.index
        assert isinstance(index, FaissIndex)
        with index._lock.exclusive():
            assert not collection.searches_locally()  # a change holds the index: a search now would wait
        assert collection.searches_locally()


# -- shared database: several writers, one key ----------------------------------------------------
WRITER_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "RG1_UNCI.dcm",
    "RG1_UNCR.dcm",
    "RG3_UNCI.dcm",
    "US1_UNCR.dcm",
    "SC_rgb.dcm",
    "JPEG-LL.dcm",
    "MR2_UNCI.dcm",
    "693_UNCI.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_palette.dcm",
    "liver_1frame.dcm",
    "SC_rgb_rle.dcm",
    "image_dfl.dcm",
]


@pytest.mark.backends("postgres-faiss")
def test_two_indexers_on_one_database_end_with_the_union(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    """Two `medsearch index` processes (own data folders, one MEDSEARCH_DATABASE_URL) index overlapping inputs at
    once: copies of the same instances under other paths, and one folder both index. Exactly the union results."""
    third = len(WRITER_FILES) // 3
    only_a = _copy(WRITER_FILES[: 2 * third], tmp_path / "a")
    only_b = _copy(WRITER_FILES[third:], tmp_path / "b")  # the middle third is in both, under other paths
    shared = _copy(WRITER_FILES[::2], tmp_path / "shared")  # the very same files (same URIs) for both
    dir_a, dir_b = tmp_path / "data-a", tmp_path / "data-b"
    url = backend.settings(dir_a)["database_url"]
    backend.databases[dir_b.resolve()] = str(url)  # the second machine: another folder, the same database
    env = {**medsearch_env(tiny_model), **backend.env(dir_a)}
    procs = [
        subprocess.Popen(
            [
                *(str(MEDSEARCH), "index", str(src), str(shared), "--workers", "0", "--batch-size", "2"),
                *("-q", "--json", "--data-dir", str(data)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for src, data in ((only_a, dir_a), (only_b, dir_b))
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()[-3000:]
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    assert all(s["failed"] == 0 for s in summaries), summaries

    # the union, computed by one uninterrupted writer on its own SQLite folder
    reference = Collection(make_settings(tmp_path / "ref", tiny_model, database_url=None, patient_salt=TEST_SALT))
    run_index(reference, [only_a, only_b, shared], IndexOptions(workers=0))
    with reference.catalog.sessions() as session:
        want = dict(session.execute(select(Image.instance_key, Image.patient_hash)).all())
    reference.close()

    shared_db = create_engine(str(url))
    with shared_db.connect() as conn:
        dupes = conn.execute(select(Image.instance_key).group_by(Image.instance_key).having(func.count() > 1)).all()
        got = dict(conn.execute(select(Image.instance_key, Image.patient_hash)).all())
        orphans = conn.execute(
            select(func.count())
            .select_from(Image)
            .outerjoin(Vector, Vector.image_id == Image.id)
            .where(Vector.image_id.is_(None))
        ).scalar_one()
        sources = conn.execute(text("SELECT uri, status, images FROM sources")).all()
    shared_db.dispose()
    assert not dupes and orphans == 0
    assert got == want  # same instances, and the same patient hashes: one key on both machines
    assert sum(s["indexed"] for s in summaries) == len(want)
    per_uri = {uri: images for uri, status, images in sources if status == "indexed"}
    assert sum(per_uri.values()) == len(want)  # every image counted under exactly one source
    for data in (dir_a, dir_b):  # each machine's FAISS index catches up with the other's writes on open
        collection = Collection(make_settings(data, tiny_model))
        try:
            assert np.array_equal(collection.index.ids(), collection.catalog.all_ids())  # type: ignore[union-attr]
            assert collection.index.ntotal == len(want)  # type: ignore[union-attr]
        finally:
            collection.close()
    print(f"writers indexed {[s['indexed'] for s in summaries]}, duplicates {[s['duplicates'] for s in summaries]}")


@pytest.mark.backends("postgres-faiss")
def test_a_shared_database_needs_one_patient_key(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    Collection(make_settings(data_dir, tiny_model)).close()  # records the key's check value
    with pytest.raises(MedsearchError, match="MEDSEARCH_PATIENT_SALT") as missing:
        Collection(make_settings(data_dir, tiny_model, patient_salt=None))
    assert missing.value.code == "salt_required"
    with pytest.raises(MedsearchError, match="another key") as other:
        Collection(
            make_settings(tmp_path / "other-machine", tiny_model, patient_salt="x" * 40, **_same_db(backend, data_dir))
        )
    assert other.value.code == "salt_mismatch"


def _same_db(backend: Backend, data_dir: Path) -> dict[str, object]:
    return {"database_url": backend.settings(data_dir)["database_url"]}


def test_a_replaced_salt_file_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    Collection(make_settings(data_dir, tiny_model)).close()
    (data_dir / "patient-salt").write_text("f" * 64)
    with pytest.raises(MedsearchError) as info:
        Collection(make_settings(data_dir, tiny_model))
    assert info.value.code == "salt_mismatch"


def test_unsupported_database_url_is_a_clear_error(tmp_path: Path, tiny_model: Path) -> None:
    for url, words in (("mysql://u@h/db", "SQLite and PostgreSQL"), ("not a url", "not a SQLAlchemy URL")):
        with pytest.raises(MedsearchError, match=words) as info:
            Collection(make_settings(tmp_path / "data", tiny_model, database_url=url))
        assert info.value.code == "unsupported_database"


# -- Milvus Lite specifics -----------------------------------------------------------------------
@pytest.mark.backends("milvus-lite")
def test_milvus_lite_file_in_use_is_a_clear_error(collection: Collection, tmp_path: Path, tiny_model: Path) -> None:
    """Milvus Lite serves one process: a second process gets index_busy and how to fix it, and works once the
    first lets go."""
    _synthetic(collection, ["CT"] * 3)
    env = {**medsearch_env(tiny_model), **Backend("milvus-lite").env(collection.settings.data_dir)}
    command = [str(MEDSEARCH), "stats", "--json", "--data-dir", str(collection.settings.data_dir)]
    busy = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert busy.returncode == 1 and b"index_busy" in busy.stderr and b"MEDSEARCH_MILVUS_URI" in busy.stderr
    collection.close()
    free = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert free.returncode == 0, free.stderr.decode()[-2000:]
    assert json.loads(free.stdout)["index_vectors"] == 3


@pytest.mark.backends("milvus-lite")
def test_milvus_keeps_one_row_per_id_and_replaces_a_wrong_width(collection: Collection) -> None:
    ids, vecs = _synthetic(collection, ["CT"] * 5)
    index = collection.index
    assert isinstance(index, MilvusIndex)
    index.add(ids, vecs)  # the same ids again (a re-sync after a crash): upserted, not duplicated
    assert index.ntotal == 5 and np.array_equal(index.ids(), ids)
    uri, name = index.uri, index.name
    data_dir, model = collection.settings.data_dir, Path(collection.settings.model)
    collection.close()
    wider = MilvusIndex(uri, name, vecs.shape[1] * 2)  # another model's width: the old vectors are dropped
    try:
        assert wider.ntotal == 0 and len(wider.ids()) == 0
    finally:
        wider.close()
    reopened = Collection(make_settings(data_dir, model))  # back at the model's width: refilled from the store
    try:
        assert reopened.reconcile_report is not None and reopened.reconcile_report.rebuilt
        assert np.array_equal(reopened.index.ids(), ids)  # type: ignore[union-attr]
    finally:
        reopened.close()


def test_postgres_server_fixture_is_real(postgres_server: PostgresServer) -> None:
    """The server the postgres-faiss tests use is a real PostgreSQL on loopback."""
    eng = create_engine(postgres_server.url())
    try:
        with eng.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            listen = conn.execute(text("SHOW listen_addresses")).scalar_one()
        assert version.startswith("15") and listen == "127.0.0.1"
    finally:
        eng.dispose()


# -- SIGKILL on the other backends (test_resume.py kills at six points on SQLite+FAISS) ---------------------------
def _rows(url: str) -> tuple[int, dict[str, bytes]]:
    """(image rows, instance key -> vector bytes) committed in a database, read by another process."""
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            if "vectors" not in inspect(conn).get_table_names():
                return 0, {}
            rows = conn.execute(select(Image.instance_key, Vector.vector).join(Vector, Vector.image_id == Image.id))
            found = {key: bytes(blob) for key, blob in rows}
            return conn.execute(select(func.count()).select_from(Image)).scalar_one(), found
    finally:
        eng.dispose()


@pytest.mark.slow
@pytest.mark.backends("postgres-faiss", "milvus-lite")
def test_sigkill_mid_run_then_rerun_loses_nothing(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    """Kill `medsearch index` (its whole process group) once half the rows are committed; the re-run ends with
    exactly the rows and vectors of an uninterrupted run, and the vector backend agrees with the store."""
    folder = _copy(WRITER_FILES, tmp_path / "in")
    reference = Collection(make_settings(tmp_path / "ref", tiny_model, database_url=None, patient_salt=TEST_SALT))
    run_index(reference, [folder], IndexOptions(workers=0, batch_size=2))
    with reference.catalog.sessions() as session:
        want = {key: reference.catalog.vector(i) for key, i in session.execute(select(Image.instance_key, Image.id))}
    reference.close()

    data_dir = tmp_path / "data"
    url = make_settings(data_dir, tiny_model).resolved_database_url
    env = {**medsearch_env(tiny_model), **backend.env(data_dir)}
    command = [str(MEDSEARCH), "index", str(folder), "--workers", "1", "--batch-size", "2", "-q", "--json"]
    command += ["--data-dir", str(data_dir)]
    log = tmp_path / "stderr.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 150
            while (_rows(url)[0] if Path(data_dir).exists() else 0) < len(want) // 2:
                assert proc.poll() is None, f"the run ended before the kill point:\n{log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "the kill point was never reached"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            assert_group_gone(proc.pid)
        finally:
            kill_group(proc)
    killed_rows = _rows(url)[0]
    assert 0 < killed_rows < len(want)
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    assert json.loads(rerun.stdout)["indexed"] == len(want) - killed_rows
    count, got = _rows(url)
    assert count == len(got) == len(want) and set(got) == set(want)
    for key, vector in want.items():
        np.testing.assert_allclose(np.frombuffer(got[key], np.float32), vector, atol=1e-5, err_msg=key)  # type: ignore[arg-type]
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        report = collection.reconcile_report
        assert report is not None and (report.added, report.removed) == (0, 0), report
        assert np.array_equal(collection.index.ids(), collection.catalog.all_ids())  # type: ignore[union-attr]
    finally:
        collection.close()


@pytest.mark.backends("milvus-lite")
def test_a_damaged_milvus_lite_file_is_set_aside_and_rebuilt(collection: Collection, tiny_model: Path) -> None:
    """Like a corrupt FAISS file: never a crash; the vectors come back from the store."""
    ids, _ = _synthetic(collection, ["CT"] * 4)
    data_dir = collection.settings.data_dir
    collection.close()
    shutil.rmtree(data_dir / "milvus.db")
    (data_dir / "milvus.db").write_bytes(b"not a milvus lite folder")
    reopened = Collection(make_settings(data_dir, tiny_model))
    try:
        assert reopened.reconcile_report is not None and reopened.reconcile_report.rebuilt
        assert np.array_equal(reopened.index.ids(), ids)  # type: ignore[union-attr]
        assert len(list(data_dir.glob("milvus.db.damaged-*"))) == 1
    finally:
        reopened.close()
