"""Schema migrations per database: a new database equals the models, a 0.1 database is adopted, first opens race."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from retrieval.collection import Collection
from retrieval.store.db import make_engine
from retrieval.store.migrate import head_revision
from retrieval.store.models import Base, Image, IndexInfo
from retrieval.store.report_search import is_full_text_object
from tests.backends import Backend
from tests.conftest import make_settings
from tests.test_resume import medsearch_env

MEDSEARCH = Path(sys.executable).parent / "medsearch"


def _old_create_all(url: str) -> None:
    """How medsearch 0.1 made a database (make_engine before Alembic), frozen here."""
    old = create_engine(url)
    Base.metadata.create_all(old)
    with old.begin() as conn:
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    with Session(old) as session, session.begin():
        session.add(IndexInfo(key="schema_version", value="1"))
    old.dispose()


def _schema_diff(url: str) -> list[object]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            # the full-text objects beside `reports` (FTS5 table, GIN expression index) are made by migration 0008 only
            context = MigrationContext.configure(conn, opts={"include_name": _not_full_text})
            return list(compare_metadata(context, Base.metadata))
    finally:
        eng.dispose()


def _not_full_text(name: str | None, kind: str, parent: object) -> bool:
    return not is_full_text_object(name)


def _revision(url: str) -> str | None:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        eng.dispose()


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_a_new_database_is_migrated_to_exactly_the_models(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    settings = make_settings(tmp_path / "data", tiny_model)
    Collection(settings).close()
    url = settings.resolved_database_url
    assert _revision(url) == head_revision()
    assert _schema_diff(url) == []  # migrations and models agree: no table, column or index missing or extra
    make_engine(url).dispose()  # a second open at head changes nothing
    assert _revision(url) == head_revision()


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_a_pre_alembic_database_is_adopted_with_its_rows(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    """A data folder made by 0.1's create_all (tables, no alembic_version) is stamped and upgraded, not recreated."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = make_settings(data_dir, tiny_model).resolved_database_url
    _old_create_all(url)
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO images (instance_key, kind, frame, number_of_frames, source_uri, content_hash, "
                "modality, indexed_at) VALUES ('old-1', 'raster', 1, 1, '/old/1.png', 'h1', 'CT', :now)"
            ),
            {"now": "2025-01-01 00:00:00"},
        )
        image_id = conn.execute(text("SELECT id FROM images")).scalar_one()
        conn.execute(
            text("INSERT INTO vectors (image_id, vector) VALUES (:id, :v)"),
            {"id": image_id, "v": np.ones(4, np.float32).tobytes()},
        )
    old.dispose()
    assert _revision(url) is None
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        assert _revision(url) == head_revision()
        assert _schema_diff(url) == []
        with collection.catalog.sessions() as session:
            keys = list(session.scalars(select(Image.instance_key)))
            assert keys == ["old-1"]
            assert session.get(IndexInfo, "schema_version") is not None  # untouched
        assert collection.catalog.all_ids().tolist() == [image_id]
        assert np.array_equal(collection.catalog.vector(image_id), np.ones(4, np.float32))  # type: ignore[arg-type]
    finally:
        collection.close()


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
@pytest.mark.e2e
def test_simultaneous_first_opens_migrate_once(backend: Backend, tmp_path: Path, tiny_model: Path) -> None:
    """Three processes open one empty database at the same moment: the lock lets one migrate, all succeed."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()  # an empty folder, as an administrator makes it: `stats` refuses one that does not exist
    env = {**medsearch_env(tiny_model), **backend.env(data_dir)}
    procs = [
        subprocess.Popen(
            [str(MEDSEARCH), "stats", "--json", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert json.loads(stdout)["images"] == 0
    url = make_settings(data_dir, tiny_model).resolved_database_url
    assert _revision(url) == head_revision() and _schema_diff(url) == []
