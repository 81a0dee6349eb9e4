"""Hybrid search at series and study level: RRF of the level's embedding rank and the report rank of the case's
study; hits carry both ranks; filters and exclusions bound both lists (CLI and API)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from indexer.job import IndexOptions
from indexer.pipeline import run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.hybrid import fuse, hybrid_cases
from retrieval.reports.imports import import_reports
from retrieval.store.repo import Filters
from tests.conftest import testdata_file

pytestmark = pytest.mark.backends("sqlite-faiss", "postgres-faiss")  # the report ranks are SQL: both databases

REPORTS = {
    "effusion": "Small left pleural effusion. No pneumothorax.",
    "consolidation": "Right lower lobe consolidation.",
    "normal": "No acute findings.",
}


def _studies(folder: Path) -> dict[str, str]:
    """Three one-patient studies: "effusion" has two CT series, the others one series each (CT, MR, CT)."""
    uids: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    layout = {
        "effusion": ["CT_small.dcm", "CT_small.dcm"],
        "consolidation": ["MR_small.dcm"],
        "normal": ["CT_small.dcm"],
    }
    for n, (name, series_files) in enumerate(layout.items()):
        study = uids[name] = generate_uid()
        for s, source in enumerate(series_files):
            ds = pydicom.dcmread(testdata_file(source))
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, generate_uid(), f"P{n}"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(folder / f"{name}-{s}.dcm", enforce_file_format=True)
    return uids


@pytest.fixture
def studies(collection: Collection, tmp_path: Path) -> dict[str, str]:
    uids = _studies(tmp_path / "in")
    run_index(collection, [tmp_path / "in"], IndexOptions(workers=0, batch_size=8))
    table = tmp_path / "reports.csv"
    table.write_text("study_instance_uid,report\n" + "".join(f"{uids[n]},{t}\n" for n, t in REPORTS.items()))
    import_reports(collection, table)
    return uids


def test_fusion_keys_may_be_case_uids() -> None:
    # "b" is second by the embedding and first by the report: 1/62 + 1/61 beats "a"'s 1/61 alone
    assert fuse({"a": 1, "b": 2, "c": 3}, {"b": 1, "z": 2}) == ["b", "a", "z", "c"]


@pytest.mark.slow  # indexes a collection (make test-fast is at its budget)
def test_study_level_hybrid_ranks_a_study_by_its_report(collection: Collection, studies: dict[str, str]) -> None:
    for words, first in (("pleural effusion", "effusion"), ("lobe consolidation", "consolidation")):
        query = engine.embed_text(collection, words)
        hits, total = hybrid_cases(collection, query, words, level="study", k=5)
        assert total == 3 and len(hits) == 3, words
        assert hits[0].image.study_instance_uid == studies[first] and hits[0].case is not None
        assert hits[0].case.level == "study" and hits[0].report_rank == 1
        stored = hits[0].stored_report  # the report its rank came from, shown with the case
        assert stored is not None and stored.text == REPORTS[first]
        assert [h.report_rank for h in hits[1:]] == [None, None]  # no other report has these words
        assert sorted(h.embedding_rank for h in hits) == [1, 2, 3]  # every study was in the embedding list
        assert [h.rank for h in hits] == [1, 2, 3]
    negated = hybrid_cases(collection, query, "pneumothorax", level="study", k=5)[0]
    assert [h.report_rank for h in negated] == [None, None, None]  # "No pneumothorax." never matches
    mr_only = hybrid_cases(collection, query, "pleural effusion", level="study", k=5, filters=Filters(modality=["MR"]))
    assert [(h.image.study_instance_uid, h.report_rank) for h in mr_only[0]] == [(studies["consolidation"], None)]


@pytest.mark.slow  # indexes a collection (make test-fast is at its budget)
def test_series_level_hybrid_series_share_their_studys_report_rank(
    collection: Collection, studies: dict[str, str]
) -> None:
    query = engine.embed_text(collection, "pleural effusion")
    hits, total = hybrid_cases(collection, query, "pleural effusion", level="series", k=5)
    assert total == 4 and len(hits) == 4
    top = hits[:2]  # both series of the effusion study: report rank 1 each, ahead of every embedding-only series
    assert {h.image.study_instance_uid for h in top} == {studies["effusion"]}
    assert [h.report_rank for h in top] == [1, 1] and all(h.case and h.case.level == "series" for h in top)
    assert len({h.image.series_instance_uid for h in hits}) == 4
    own = engine.QueryVector(vector=query.vector, kind="text", study_uid=studies["effusion"])
    excluded, _ = hybrid_cases(collection, own, "pleural effusion", level="series", k=5, exclude_same_study=True)
    assert studies["effusion"] not in {h.image.study_instance_uid for h in excluded} and len(excluded) == 2
    # a words filter composes: the report list keeps to it too
    kept, _ = hybrid_cases(collection, query, "effusion", level="series", k=5, filters=Filters(report="consolidation"))
    assert [(h.image.study_instance_uid, h.report_rank) for h in kept] == [(studies["consolidation"], None)]


@pytest.mark.slow  # indexes a collection and starts the app
@pytest.mark.backends("sqlite-faiss")  # the service opens its data folder's own database
def test_the_api_answers_hybrid_at_each_level(collection: Collection, studies: dict[str, str], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.config import ServiceSettings

    settings = collection.settings
    collection.close()
    app = create_app(ServiceSettings(data_dir=settings.data_dir, model=str(settings.model)))
    with TestClient(app) as client:
        for level, count in (("series", 4), ("study", 3)):
            body = {"text": "pleural effusion", "mode": "hybrid", "level": level}
            answer = client.post("/v1/search/text", json=body)
            assert answer.status_code == 200, answer.text
            data = answer.json()
            assert (data["query"], data["level"], data["total"]) == ("text+report", level, count)
            assert len(data["hits"]) == count
            assert data["hits"][0]["report_rank"] == 1 and data["hits"][0]["embedding_rank"] is not None
            assert data["hits"][0]["study_instance_uid"] == studies["effusion"]
        reranked = client.post("/v1/search/text", json={**body, "rerank": "maxsim"})
        assert reranked.status_code == 400 and reranked.json()["code"] == "bad_query"


def test_the_human_table_shows_both_ranks_of_a_hybrid_hit() -> None:
    from rich.console import Console

    from retrieval.cli.tables import hits_table
    from retrieval.query import Hit
    from retrieval.store.models import Image

    image = Image(id=7, source_uri="/in/a.dcm", modality="CT", frame=1, study_instance_uid="1.2")
    hits = [
        Hit(rank=1, image=image, score=0.03, embedding_rank=3, report_rank=1),
        Hit(rank=2, image=image, score=0.02, embedding_rank=None, report_rank=2),
        Hit(rank=3, image=image, score=0.01, embedding_rank=5, report_rank=None),
    ]
    console = Console(width=200, record=True)
    console.print(hits_table("3 similar images", hits))
    rows = [line.split() for line in console.export_text().splitlines()]
    assert any("e/r" in line for line in rows)
    assert [row[3] for row in rows if row[1:2] == ["7"]] == ["3/1", "-/2", "5/-"]
    console.print(hits_table("1 similar image", [Hit(rank=1, image=image, score=0.9)]))
    assert "e/r" not in console.export_text()  # no fused ranks: no such column
