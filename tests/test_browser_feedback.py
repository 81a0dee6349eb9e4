"""The page's relevance feedback in a real browser: mark results, refine with the marks and the filters, clear.

Same set-up as tests/test_browser.py (Debian's Chromium through Playwright, `medsearch serve` on data/samples indexed
with the offline tiny model); its fixtures and helpers are reused, not copied.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, Request

from tests.browser import open_page, save_shot, thumbs_loaded, wait_for_new_results

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)


def _result_ids(pg: Page) -> list[int]:
    return [int(c.get_attribute("data-id") or 0) for c in pg.query_selector_all("[data-testid=result]")]


@pytest.mark.timeout(300)
def test_page_marks_refine_with_filters_and_clear(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    sent: list[dict[str, Any]] = []

    def watch(request: Request) -> None:
        if request.url.endswith("/v1/search/feedback"):
            sent.append(json.loads(request.post_data or "{}"))

    pg.on("request", watch)
    open_page(pg, server)
    pg.wait_for_selector("[data-testid=modality-CT]", state="attached")

    # a text search narrowed to CT and MR (5 of the 10 samples)
    pg.fill("#text-input", "head slice")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, "0")
    for chip in ("CT", "MR"):
        seq = pg.get_attribute("#results", "data-seq")
        pg.check(f"[data-testid=modality-{chip}]")
        wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    before = _result_ids(pg)
    assert len(before) == 5
    assert pg.is_hidden("#marks-bar")

    # mark the best one "more like this" and the third "not like this": pressed state, marked card, counts
    liked, unliked = before[0], before[2]
    like_button = pg.locator(f"[data-testid=mark-like][data-id='{liked}']")
    unlike_button = pg.locator(f"[data-testid=mark-unlike][data-id='{unliked}']")
    assert like_button.get_attribute("aria-label") == f"More like this: image {liked}"
    like_button.click()
    unlike_button.click()
    assert like_button.get_attribute("aria-pressed") == "true"
    assert unlike_button.get_attribute("aria-pressed") == "true"
    assert pg.locator(f"[data-testid=mark-unlike][data-id='{liked}']").get_attribute("aria-pressed") == "false"
    assert pg.locator(f".card-box[data-id='{liked}']").get_attribute("class") == "card-box marked-like"
    assert pg.is_visible("#marks-bar")
    assert pg.inner_text("#marks-refine") == "Refine with my marks (1 liked, 1 not)"
    # clicking a mark does not open the detail panel; clicking it twice unmarks
    assert pg.is_hidden("#detail")
    pg.locator(f"[data-testid=mark-like][data-id='{before[1]}']").click()
    pg.locator(f"[data-testid=mark-like][data-id='{before[1]}']").click()
    assert pg.inner_text("#marks-refine") == "Refine with my marks (1 liked, 1 not)"
    save_shot(pg, "20-marked.png")

    # refine: the request carries the text base, the marks and the filters; the marked images are gone
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#marks-refine")
    wait_for_new_results(pg, seq)
    assert pg.is_hidden("#error")
    assert len(sent) == 1
    body = sent[0]
    assert body["text"] == "head slice" and body["like"] == [liked] and body["unlike"] == [unliked]
    assert sorted(body["modality"]) == ["CT", "MR"] and "image_id" not in body
    after = _result_ids(pg)
    assert pg.get_attribute("#results", "data-query") == "feedback"
    assert len(after) == 3 and liked not in after and unliked not in after and set(after) < set(before)
    assert {c.inner_text() for c in pg.query_selector_all("[data-testid=result] .mod")} <= {"CT", "MR"}
    summary = pg.inner_text("#query-summary")
    assert "refined" in summary.lower() and "head slice" in summary and "1 liked, 1 not" in summary
    save_shot(pg, "21-refined.png")

    # changing a filter re-runs the refinement (still feedback, still without the marked images)
    seq = pg.get_attribute("#results", "data-seq")
    pg.uncheck("[data-testid=modality-MR]")
    wait_for_new_results(pg, seq)
    assert len(sent) == 2 and sent[1]["modality"] == ["CT"] and sent[1]["like"] == [liked]
    assert pg.get_attribute("#results", "data-query") == "feedback"
    assert liked not in _result_ids(pg) and unliked not in _result_ids(pg)

    # clear marks: the bar goes, no button stays pressed
    pg.click("#marks-clear")
    assert pg.is_hidden("#marks-bar")
    assert pg.locator("button.mark[aria-pressed=true]").count() == 0
    assert not errors, errors


@pytest.mark.timeout(300)
def test_page_says_why_results_are_empty_and_which_marks_the_filters_hide(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    open_page(pg, server)
    pg.wait_for_selector("[data-testid=modality-CT]", state="attached")
    pg.fill("#text-input", "head slice")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, "0")

    # mark the best result, then keep only another modality: the marked image is filtered away, and the page says so
    first = pg.query_selector_all("[data-testid=result]")[0]
    liked, modality = int(first.get_attribute("data-id") or 0), first.query_selector(".mod").inner_text()  # type: ignore[union-attr]
    pg.locator(f"[data-testid=mark-like][data-id='{liked}']").click()
    assert pg.is_hidden("#marks-hidden")  # on screen: nothing to say
    other = "CR" if modality != "CR" else "CT"
    seq = pg.get_attribute("#results", "data-seq")
    pg.check(f"[data-testid=modality-{other}]")
    wait_for_new_results(pg, seq)
    assert liked not in _result_ids(pg)
    note = pg.inner_text("#marks-hidden")
    assert pg.is_visible("#marks-hidden") and pg.get_attribute("#marks-hidden", "data-count") == "1"
    assert note == f"1 marked image is filtered away: image {liked} (modality {modality}); refining still uses it."
    seq = pg.get_attribute("#results", "data-seq")
    pg.uncheck(f"[data-testid=modality-{other}]")
    wait_for_new_results(pg, seq)
    assert pg.is_hidden("#marks-hidden")  # admitted again
    pg.click("#marks-clear")

    # a label no image has: the empty state gives the API's reason, not a generic line
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("[data-filter=label]", "no-such-label")
    pg.press("[data-filter=label]", "Enter")
    wait_for_new_results(pg, seq)
    assert _result_ids(pg) == [] and pg.is_visible("#empty")
    empty = pg.inner_text("#empty")
    assert empty.startswith("No results: no image matches these filters") and "label=no-such-label" in empty, empty
    save_shot(pg, "22-empty-reason.png")
    assert not errors, errors
