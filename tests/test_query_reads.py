"""The query path's store reads bypass the ORM (plain SQL on the driver's connection) and return what the ORM
would; folding near-duplicates needs no second search."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.store.models import Image
from retrieval.store.reads import HIT_SQL_KEPT, IMAGE_FIELDS
from retrieval.store.repo import Filters
from tests.conftest import SAMPLES
from tests.test_duplicates import RADIOGRAPH, store_copies


def _no_session(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("an ORM session was opened on the query path")


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_a_search_reads_the_store_without_the_orm(
    collection: Collection, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    through_orm = collection.catalog.images(ids)
    modalities = sorted({row.modality for row in through_orm.values() if row.modality})
    dated = sorted(row.study_date for row in through_orm.values() if row.study_date)
    monkeypatch.setattr(collection.catalog, "sessions", _no_session)
    monkeypatch.setattr(collection.catalog.findings, "sessions", _no_session)
    monkeypatch.setattr(collection.catalog.reports, "sessions", _no_session)  # the hits' reports too
    monkeypatch.setattr(collection.catalog, "query_row", _no_session)  # the query's vector: from the index
    # the hits' rows are plain objects: no ORM instance state per row (it cost as much as the rest of the row)
    monkeypatch.setattr(Image._sa_class_manager, "new_instance", _no_session)  # type: ignore[attr-defined]
    query = engine.embed_id(collection, ids[0])
    hits, available = engine.search_page(collection, query, k=len(ids))
    assert available == len(ids) and len(hits) == len(ids) - 1
    for hit in hits:  # every column as the ORM loads it (dates as dates, timestamps as timestamps)
        want = through_orm[hit.image.id]
        assert {f: getattr(hit.image, f) for f in IMAGE_FIELDS} == {f: getattr(want, f) for f in IMAGE_FIELDS}
    filters = Filters(modality=modalities[:1], date_from=dated[0], date_to=dated[-1])
    expected = {i for i, row in through_orm.items() if row.modality == modalities[0] and row.study_date}
    filtered, available = engine.search_page(
        collection, engine.QueryVector(query.vector, "image"), k=20, filters=filters
    )
    assert available == len(expected) and {h.image.id for h in filtered} == expected


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_a_searchs_rows_are_the_rows_asked_for_in_every_form(collection: Collection, sample_dir: Path) -> None:
    """A search's hits (distinct valid ids) take SQLite's short way; repeated, impossible or no ids the general one:
    the same rows either way, and the flags of a collection with no findings and no reports."""
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    through_orm = collection.catalog.images(ids)
    for asked in (ids, ids[::-1], ids[:1], ids[3:] + ids[:3], ids + ids[:2], [*ids[:3], 2**63, 0, -5], [10**9], []):
        rows, any_findings, any_reports = collection.catalog.search_rows(asked)
        assert sorted(rows) == sorted({i for i in asked if i in through_orm}), asked
        for image_id, row in rows.items():
            want = through_orm[image_id]
            assert {f: getattr(row, f) for f in IMAGE_FIELDS} == {f: getattr(want, f) for f in IMAGE_FIELDS}
        assert (any_findings, any_reports) == (False, False)
    many = ids + list(range(max(ids) + 1, max(ids) + 1 + HIT_SQL_KEPT))  # more ids than a kept statement text has
    assert sorted(collection.catalog.search_rows(many)[0]) == sorted(ids)
    if collection.catalog.reads.dialect == "sqlite":  # texts kept for pages of hits, not for every size asked
        assert len(ids) in collection.catalog.reads._hit_sql and len(many) not in collection.catalog.reads._hit_sql


@pytest.mark.backends("sqlite-faiss", "postgres-faiss")
def test_folding_copies_needs_one_search(
    collection: Collection, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_copies(sample_dir)  # the radiograph three times: 12 images, 10 distinct
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    index = collection.index
    assert index is not None
    searches: list[tuple[int, int | None]] = []
    real = index.search_vectors

    def counted(
        query: Any, k: int, candidates: Any = None, with_vectors: bool = True, exact_top: Any = None, probe: float = 1.0
    ) -> Any:
        searches.append((k, exact_top))
        return real(query, k, candidates, with_vectors, exact_top, probe)

    monkeypatch.setattr(index, "search_vectors", counted)
    hits = engine.search(collection, engine.embed_image(collection, (SAMPLES / RADIOGRAPH).read_bytes()), k=10)
    assert len(hits) == 10 and hits[0].duplicates == 2
    # the margin fetched the copies' places in the same search (all 12 images: 10 + a margin of 10), and the index
    # was told which 10 the page shows (a lossy one re-ranks 4 x those, not 4 x the margin too)
    assert searches == [(12, 10)]


@pytest.mark.backends("sqlite-faiss")  # PostgreSQL keeps the pool
def test_sqlite_reads_keep_one_connection_per_thread_and_see_every_commit(
    collection: Collection, sample_dir: Path
) -> None:
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    query = engine.embed_id(collection, ids[0])
    engine.search_page(collection, query, k=5)  # this thread's connection is open from here on
    checkouts: list[object] = []

    def checked_out(*args: object) -> None:
        checkouts.append(args)

    event.listen(collection.engine, "checkout", checked_out)
    try:
        engine.search_page(collection, query, k=5)
        assert checkouts == []  # no statement of a search took a connection out of the pool
        with collection.catalog.sessions() as session, session.begin():  # a write on another connection
            session.execute(update(Image).where(Image.id == ids[1]).values(label="relabelled"))
        assert collection.catalog.hit_rows([ids[1]])[ids[1]].label == "relabelled"  # seen at the next statement
        seen: list[object] = []
        reader = threading.Thread(target=lambda: seen.append(collection.catalog.hit_rows([ids[1]])[ids[1]].label))
        reader.start()
        reader.join()
        assert seen == ["relabelled"]  # another thread opens its own and sees it too
    finally:
        event.remove(collection.engine, "checkout", checked_out)
    held = [connection for connection, _ in collection.catalog.reads._held]
    assert len(held) == 2
    collection.close()
    assert collection.catalog.reads._held == []
    for connection in held:  # closed with the engine
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")
