"""The page's case queries in real Chromium: an uploaded series (several files, or one zip) as the query, the maxsim
re-ranking switch, the series/study descriptions on case cards, and the series-sampling figures in the top bar."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from indexer.pipeline import run_index
from retrieval.collection import Collection
from tests.browser import open_page, serve_samples, wait_for_new_results
from tests.conftest import make_settings
from tests.phantoms import write_studies

SLICES = 24  # a volume of 24 slices: 16 sampled, 8 skipped by sampling (and a localizer left out) per series


@pytest.fixture(scope="module")
def phantoms(chromium: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict[str, Any]]:
    """Two CT phantoms and their re-acquisitions (four series, four studies), indexed, and a server over them."""
    root = tmp_path_factory.mktemp("case-queries")
    studies = write_studies(root / "in", shapes=("sphere", "cylinder"), slices=SLICES)
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        summary = run_index(collection, [root / "in"])
    finally:
        collection.close()
    assert summary.indexed == 4 * 16 and summary.failed == 0, summary
    archive = root / "sphere-again.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in studies["sphere"][1].files:
            out.write(path, f"sphere-again/{path.name}")
    with serve_samples(root / "data", tiny_model) as base:
        yield {"base": base, "studies": studies, "zip": archive}


def _top_uid(page: Page) -> str | None:
    return page.locator("#results .card").first.get_attribute("data-uid")


def test_an_uploaded_series_or_zip_is_the_query(phantoms: dict[str, Any], page: Page) -> None:
    open_page(page, phantoms["base"])
    sphere, sphere_again = phantoms["studies"]["sphere"]
    assert page.is_checked("[data-testid=level-image]")
    seq = page.get_attribute("#results", "data-seq")
    with page.expect_request(lambda r: r.url.endswith("/v1/search/case")) as sent:
        page.set_input_files("[data-testid=case-input]", [str(p) for p in sphere.files])
    wait_for_new_results(page, seq)
    answer = sent.value.response()
    assert answer is not None and answer.json()["query"] == "case" and answer.json()["level"] == "series"
    assert page.is_checked("[data-testid=level-series]")  # a case is compared with cases
    assert page.get_attribute("[data-testid=query-summary]", "data-kind") == "upload"
    assert f"{len(sphere.files)} files" in page.inner_text("[data-testid=query-summary]")
    assert page.locator("#results .card[data-level=series]").count() == 4
    assert _top_uid(page) == sphere.series_uid  # its own files: an upload is not an indexed query, score 1
    seq = page.get_attribute("#results", "data-seq")
    page.set_input_files("[data-testid=case-input]", str(phantoms["zip"]))
    wait_for_new_results(page, seq)
    assert "sphere-again.zip" in page.inner_text("[data-testid=query-summary]")
    assert _top_uid(page) == sphere_again.series_uid
    seq = page.get_attribute("#results", "data-seq")
    page.check("[data-testid=level-study]")  # the level switch re-runs the uploaded case
    wait_for_new_results(page, seq)
    assert page.locator("#results .card[data-level=study]").count() == 4
    assert page.locator("#results .card").first.get_attribute("data-uid") == sphere_again.study_uid


def test_maxsim_from_the_page_gives_the_apis_reranked_scores(phantoms: dict[str, Any], page: Page) -> None:
    open_page(page, phantoms["base"])
    assert page.is_disabled("[data-testid=rerank]")  # nothing to re-rank at the image level
    page.check("[data-testid=level-series]")
    page.check("[data-testid=rerank]")
    seq = page.get_attribute("#results", "data-seq")
    page.fill("#text-input", "a bright sphere")
    with page.expect_request(lambda r: r.url.endswith("/v1/search/text")) as sent:
        page.press("#text-input", "Enter")
    wait_for_new_results(page, seq)
    assert sent.value.post_data_json["rerank"] == "maxsim"
    cards = page.locator("#results .card")
    shown = [
        (cards.nth(i).get_attribute("data-uid"), float(cards.nth(i).get_attribute("data-score") or "nan"))
        for i in range(cards.count())
    ]
    with httpx.Client(base_url=phantoms["base"], timeout=60) as client:
        ask = {"text": "a bright sphere", "level": "series", "k": 20}
        reranked = client.post("/v1/search/text", json={**ask, "rerank": "maxsim"}).json()["hits"]
        centroid = client.post("/v1/search/text", json=ask).json()["hits"]
    assert shown == [(h["series_instance_uid"], h["score"]) for h in reranked]
    assert [h["score"] for h in reranked] != [h["score"] for h in centroid]  # maxsim replaced the centroid cosine


def test_case_cards_show_their_descriptions_and_the_top_bar_the_sampling(phantoms: dict[str, Any], page: Page) -> None:
    open_page(page, phantoms["base"])
    with httpx.Client(base_url=phantoms["base"], timeout=60) as client:
        stats = client.get("/v1/stats").json()
    assert stats["series"] == 4 and stats["slices_skipped_by_sampling"] == 4 * (SLICES - 16)
    page.wait_for_selector("[data-testid=sampling]")
    top = page.inner_text("[data-testid=stats]")
    assert "4 series" in top and "4 studies" in top
    assert page.inner_text("[data-testid=sampling]") == (
        f"{stats['slices_skipped_by_sampling']} slices skipped by sampling, "
        f"{stats['encoder_calls_saved']} encoder calls saved"
    )
    assert stats["encoder_calls_saved"] == stats["slices_skipped_by_sampling"] + 4  # and the four localizers
    page.check("[data-testid=level-series]")
    seq = page.get_attribute("#results", "data-seq")
    page.fill("#text-input", "a sphere")
    page.press("#text-input", "Enter")
    wait_for_new_results(page, seq)
    descriptions = page.locator("#results .card [data-testid=case-description]")
    assert descriptions.count() == 4
    assert {descriptions.nth(i).inner_text() for i in range(4)} == {"AXIAL 5MM · PHANTOM STUDY"}
