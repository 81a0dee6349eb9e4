"""The API's `report` filter: words narrow the hits, a query that cannot be read is a 400 showing the problem, and
nothing the study's headers name reaches an answer or the service's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import ServiceSettings
from indexer.job import IndexOptions
from indexer.pipeline import run_index
from retrieval.collection import Collection
from tests.conftest import make_settings
from tests.test_reports import HEADER_VALUES, _study_files


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("reports-api")
    _study_files(root / "study")
    settings = make_settings(root / "data", tiny_model)
    with Collection(settings) as collection:
        run_index(collection, [root / "study"], IndexOptions(workers=0, batch_size=8))
    app = create_app(ServiceSettings(data_dir=root / "data", model=str(tiny_model)))
    with TestClient(app) as test_client:
        yield test_client


def test_words_filter_hits_and_answers_carry_the_scrubbed_report(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    found = client.post("/v1/search/text", json={"text": "chest", "report": '"pleural effusion"'})
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert len(hits) == 1 and "pleural effusion" in hits[0]["report"]
    negated = client.post("/v1/search/text", json={"text": "chest", "report": "pneumothorax"})
    assert negated.status_code == 200 and negated.json()["hits"] == []
    image = client.get(f"/v1/images/{hits[0]['id']}")
    answers = found.text + negated.text + image.text
    assert [v for v in HEADER_VALUES if v.lower() in (answers + caplog.text).lower()] == []


@pytest.mark.parametrize(
    ("words", "shown"),
    [('"pleural effusion', "never closed"), ("effusion OR", "no words after OR"), ("(edema", "never closed")],
)
def test_a_report_query_that_cannot_be_read_is_a_400_showing_the_problem(
    client: TestClient, words: str, shown: str
) -> None:
    answer = client.post("/v1/search/text", json={"text": "chest", "report": words})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_report_query" and shown in answer.json()["message"]
    image_id = client.post("/v1/search/text", json={"text": "chest"}).json()["hits"][0]["id"]
    pivot = client.get(f"/v1/images/{image_id}/similar", params={"report": words})  # a query parameter too
    assert pivot.status_code == 400 and pivot.json()["code"] == "bad_report_query", pivot.text


def test_hybrid_mode_answers_both_ranks(client: TestClient) -> None:
    answer = client.post("/v1/search/text", json={"text": "pleural effusion", "mode": "hybrid"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == "text+report"
    assert (body["hits"][0]["embedding_rank"], body["hits"][0]["report_rank"]) == (1, 1)
    grouped = client.post("/v1/search/text", json={"text": "effusion", "mode": "hybrid", "group_by": "study"})
    assert grouped.status_code == 400 and grouped.json()["code"] == "bad_query"


def test_answers_carry_context_and_marked_snippets_and_the_study_reports_route(client: TestClient) -> None:
    found = client.post("/v1/search/text", json={"text": "chest", "report": "effus*"}).json()
    hit = found["hits"][0]
    snippet = hit["snippet"]
    assert [snippet["text"][s:e] for s, e in snippet["highlights"]] == ["effusion"]
    assert hit["report_versions"] == 1
    context = found["context"]
    assert context["hits"] == 1 and context["with_report"] == 1 and "Not for diagnosis" in context["notice"]
    assert [(f["name"], f["count"], f["share"]) for f in context["findings"]] == [("pleural effusion", 1, 1.0)]
    pivot = client.get(f"/v1/images/{hit['id']}/similar").json()  # every search kind answers a context
    assert pivot["context"]["hits"] == len(pivot["hits"])
    reports = client.get(f"/v1/studies/{hit['study_instance_uid']}/reports")
    assert reports.status_code == 200, reports.text
    body = reports.json()
    assert body["versions"] == 1 and body["reports"][0]["latest"] and body["reports"][0]["negated"] == ["pneumothorax"]
    missing = client.get("/v1/studies/1.2.3/reports")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
