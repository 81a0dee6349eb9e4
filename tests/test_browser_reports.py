"""The page's reports in a real browser: the report box narrows a text search, snippets mark its words, the
context panel's counts are the API's, hybrid mode from the toggle, the detail view's report panel, and report text
that looks like HTML stays text.

Same set-up as tests/test_browser.py (Debian's Chromium through Playwright, `medsearch serve` on data/samples indexed
with the offline tiny model), plus imported reports for four of the sample studies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from playwright.sync_api import Page

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.labels import load_labels
from retrieval.reports.imports import import_reports
from tests.browser import open_page, save_shot, serve_samples, wait_for_new_results
from tests.conftest import SAMPLES, make_settings

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)
INJECTION = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
REPORTS = [  # (sample file, date, report)
    ("CT_small.dcm", "2020-01-01", "Right pleural effusion with adjacent atelectasis."),
    ("CT_small.dcm", "2020-02-01", f"Small right pleural effusion, decreasing. {INJECTION}"),
    ("RG1_J2KI.dcm", "2020-01-05", "Left lower lobe consolidation and a small pleural effusion."),
    ("MR_small.dcm", "2020-01-07", "No effusion. Unremarkable brain."),
    ("RG3_J2KI.dcm", "2020-01-09", "Fracture of the distal tibia."),
]


@pytest.fixture(scope="module")
def reports_server(chromium: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser-reports")
    path = root / "reports.jsonl"
    rows = []
    for name, date, text in REPORTS:
        study = str(pydicom.dcmread(SAMPLES / name, stop_before_pixels=True).StudyInstanceUID)
        rows.append(json.dumps({"study_instance_uid": study, "date": date, "report": text}))
    path.write_text("\n".join(rows) + "\n")
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        run_index(collection, [SAMPLES], IndexOptions(labels=load_labels(SAMPLES / "labels.csv")))
        assert import_reports(collection, path).stored == len(REPORTS)
    finally:
        collection.close()
    with serve_samples(root / "data", tiny_model) as base:
        yield base


def _context_of(pg: Page) -> list[tuple[str, str, int]]:
    return [
        (
            row.get_attribute("data-kind") or "",
            row.get_attribute("data-name") or "",
            int(row.get_attribute("data-count") or 0),
        )
        for row in pg.query_selector_all("[data-testid=context-item]")
    ]


def _api_context(context: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (kind, item["name"], item["count"])
        for kind in ("findings", "labels", "tags", "probes")
        for item in context[kind]
    ]


@pytest.mark.timeout(300)
def test_report_box_snippets_context_hybrid_and_report_panel(reports_server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    open_page(pg, reports_server)
    assert pg.locator("[data-filter=report]").count() == 1  # the report box, not a second field among the filters
    pg.fill("#text-input", "chest")
    pg.fill("#report-input", "effusion")
    pg.press("#report-input", "Enter")
    wait_for_new_results(pg, "0")
    api = httpx.post(reports_server + "/v1/search/text", json={"text": "chest", "report": "effusion", "k": 20}).json()
    cards = pg.query_selector_all("[data-testid=result]")
    assert [int(c.get_attribute("data-id") or 0) for c in cards] == [h["id"] for h in api["hits"]]
    assert len(cards) == 2  # CT and CR say it; the MR's "No effusion." does not match
    marks = [m.inner_text() for m in pg.query_selector_all("[data-testid=snippet] mark")]
    assert marks == ["effusion", "effusion"]
    assert pg.is_visible("[data-testid=context-panel]")
    shown = _context_of(pg)
    assert shown == _api_context(api["context"]) and ("findings", "pleural effusion", 2) in shown
    assert "Not for diagnosis" in pg.inner_text("[data-testid=context-notice]")
    assert pg.inner_text("[data-testid=context-reported]") == "2 of 2 with a report"

    # report text that looks like HTML is shown as text: no element made from it, no script run
    snippets = [s.inner_text() for s in pg.query_selector_all("[data-testid=snippet]")]
    assert any("<b>bold</b>" in s for s in snippets), snippets
    assert pg.query_selector_all("[data-testid=snippet] img, [data-testid=snippet] b") == []
    assert pg.evaluate("() => window.__pwned") is None

    # the detail view: the study's latest report, "latest of 2 versions", the same text as text
    ct = next(c for c in cards if c.get_attribute("data-source") == "CT_small.dcm")
    ct.click()
    pg.wait_for_selector("[data-testid=detail-report][data-loaded=true]")
    assert pg.text_content("[data-testid=detail-report-versions]") == "latest of 2 versions"
    latest = pg.inner_text("[data-testid=report-latest]")
    assert latest.startswith("Small right pleural effusion") and "<b>bold</b>" in latest
    assert pg.query_selector_all("[data-testid=detail-report] img, [data-testid=detail-report] b") == []
    assert pg.locator("[data-testid=report-earlier]").count() == 1
    save_shot(pg, "reports-page.png")
    pg.click("#detail-close")

    # hybrid from the toggle: the answer is text+report, every hit carries both ranks
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("#report-input", "")
    pg.fill("#text-input", "pleural effusion")
    pg.check("#hybrid-toggle")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, seq)
    assert pg.get_attribute("#results", "data-query") == "text+report"
    first = pg.query_selector("[data-testid=result]")
    assert first is not None and first.get_attribute("data-source") in ("CT_small.dcm", "RG1_J2KI.dcm")
    marked = [m.inner_text() for m in first.query_selector_all("[data-testid=snippet] mark")]
    assert marked == ["pleural", "effusion"]  # hybrid matches any of the text's words
    assert pg.evaluate("() => window.__pwned") is None
    assert errors == []
