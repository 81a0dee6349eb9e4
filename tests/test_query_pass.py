"""A search by id is one pass: the index hands its hits' vectors to folding (no second vector lookup), and the
store answers the hits' rows in one statement (the query's own row only when an exclusion needs its patient or
study), reading findings and reports only when the collection holds some (issue 22)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import NotFoundError
from retrieval.index.faiss_index import FaissIndex
from retrieval.store.reports import NewReport
from tests.test_duplicates import store_copies


def _statements(collection: Collection) -> list[str]:
    """Every statement this thread's read connections run from now on (SQLite; the findings store has its own)."""
    seen: list[str] = []
    for reads in (collection.catalog.reads, collection.catalog.findings._reads):
        reads._own_connection().set_trace_callback(seen.append)
    return seen


def _report(study: str) -> NewReport:
    text = "Small nodule in the left lung."
    return NewReport(study, "import", None, None, text, text, "", len(text), False, 0, True)


@pytest.mark.backends("sqlite-faiss")
def test_a_search_by_id_runs_one_statement_and_reads_findings_and_reports_only_when_there_are_some(
    collection: Collection, sample_dir: Path
) -> None:
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)  # this thread's connection opened
    seen = _statements(collection)
    hits, _ = engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)
    assert len(hits) == 5
    assert len(seen) == 1, seen  # the hits' rows: no exclusion, no tags, probes or reports to look up
    assert all(h.stored_report is None and not h.tags and not h.probes for h in hits)
    # an exclusion reads the query's own patient and study (its row), once
    seen.clear()
    query = engine.embed_id(collection, ids[0])
    pivot = collection.catalog.images([ids[0]])[ids[0]]
    others, _ = engine.search_page(collection, query, k=len(ids), exclude_same_study=True, exclude_same_patient=True)
    # (its identity, then the candidates the exclusions admit, then the hits' rows)
    assert len(seen) == 3 and "patient_hash, study_instance_uid FROM images WHERE id" in seen[0], seen
    assert query.identity() == (pivot.patient_hash, pivot.study_instance_uid) and len(seen) == 3
    assert others and all(h.image.study_instance_uid != pivot.study_instance_uid for h in others)
    assert all(h.image.patient_hash != pivot.patient_hash for h in others)
    # a report written now (by the ORM, as an import would) is found by the next search: the flag is never cached
    study = hits[0].image.study_instance_uid
    assert study
    collection.catalog.reports.add([_report(study)])
    seen.clear()
    hits, _ = engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)
    assert len(seen) == 2 and any("FROM reports r WHERE" in s for s in seen), seen
    assert [h.stored_report.text for h in hits if h.stored_report and h.image.study_instance_uid == study]
    # tag scores present: the findings are read too
    collection.catalog.findings.save_tags([("nodule", "a nodule", 0.0, np.ones(4, np.float32))], "fp")
    collection.catalog.findings.write_tag_scores(["nodule"], np.asarray([hits[0].image.id]), np.ones((1, 1)))
    seen.clear()
    hits, _ = engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)
    assert len(seen) == 3, seen
    assert hits[0].tags == {"nodule": 1.0}


@pytest.mark.backends("sqlite-faiss")
def test_folding_uses_the_vectors_the_search_ranked_with(
    collection: Collection, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_copies(sample_dir)  # the radiograph three times: 12 images, 10 distinct
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    index = collection.require_index()
    assert isinstance(index, FaissIndex)
    index.rebuild(collection.catalog, "ivf-sq8", nlist=2, nprobe=2)  # lossy: re-ranked from the float vectors
    ids = collection.catalog.all_ids()
    query = engine.embed_id(collection, int(ids[0]))
    # the same hits, scores and order as `search`, with the vectors it scored
    found = index.search_vectors(query.vector, 8)
    scores, best = index.search(query.vector, 8)
    assert found.ids.tolist() == best[0].tolist() and np.array_equal(found.scores, scores[0])
    held = index.vectors(found.ids)
    assert found.have.all() and all(np.array_equal(found.vectors[n], held[i]) for n, i in enumerate(found.ids.tolist()))
    lookups: list[Any] = []
    real = index.vectors
    monkeypatch.setattr(index, "vectors", lambda wanted: lookups.append(wanted) or real(wanted))
    copies = [i for i in ids.tolist() if i != query.image_id]
    hits = engine.search(collection, engine.QueryVector(query.vector, "image"), k=10)
    assert not lookups  # no second lookup of the hits' vectors
    assert len(hits) == 10 and sum(h.duplicates for h in hits) == 2 and len(copies) == 11


@pytest.mark.backends("sqlite-faiss")
def test_the_hits_reports_are_read_by_study_never_by_the_latest_flag(collection: Collection, sample_dir: Path) -> None:
    """The 460 ms vector-only search of bench/reports.py (1M reports, issue 22): the hits' reports were read with
    `latest = 1`, and SQLite answered it from the index on that flag, true for almost every report, so each search
    walked every latest report. The statement must look reports up by study."""
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    studies = {row.study_instance_uid for row in collection.catalog.images(ids).values() if row.study_instance_uid}
    collection.catalog.reports.add([_report(study) for study in sorted(studies)])
    collection.catalog.reports.add([_report(f"1.2.3.{n}") for n in range(300)])  # reports whose images never came
    engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)
    seen = _statements(collection)
    hits, _ = engine.search_page(collection, engine.embed_id(collection, ids[0]), k=5)
    assert any(h.stored_report is not None for h in hits)
    [statement] = [s for s in seen if "FROM reports r WHERE" in s]
    connection = collection.catalog.reads._own_connection()
    plan = " | ".join(str(row[-1]) for row in connection.execute("EXPLAIN QUERY PLAN " + statement).fetchall())
    assert "ix_reports_study_instance_uid" in plan and "ix_reports_latest" not in plan, plan


@pytest.mark.backends("sqlite-faiss")
def test_a_search_by_id_finds_its_vector_in_the_index_else_in_the_store_else_nothing(
    collection: Collection, sample_dir: Path
) -> None:
    run_index(collection, [sample_dir], IndexOptions(workers=0))
    ids = collection.catalog.all_ids().tolist()
    pivot = collection.catalog.images([ids[0]])[ids[0]]
    held = engine.embed_id(collection, ids[0])  # from the index; its identity read only when asked
    assert held.patient_hash is None and held.identity() == (pivot.patient_hash, pivot.study_instance_uid)
    index = collection.require_index()
    index.remove(np.asarray([ids[0]], np.int64))  # the index lost it (a change not reconciled yet): the store has it
    fallback = engine.embed_id(collection, ids[0])
    assert np.array_equal(fallback.vector, held.vector)
    assert (fallback.patient_hash, fallback.study_uid) == (pivot.patient_hash, pivot.study_instance_uid)
    for missing in (max(ids) + 1, 0, -1, 2**63):  # in neither, or no image id at all
        with pytest.raises(NotFoundError, match=f"no indexed image with id {missing}"):
            engine.embed_id(collection, missing)
