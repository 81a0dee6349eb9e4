"""The web page in a real browser: upload, results with thumbnails, detail panel, find similar, text search.

Runs Debian's Chromium (/usr/bin/chromium, installed by CI) through Playwright against `medsearch serve`
started as a subprocess on a temporary collection of data/samples indexed with the offline tiny model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route
from pydicom.data import get_testdata_file

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from tests.browser import (
    KEY,
    VIEWER,
    open_page,
    save_docs_png,
    save_shot,
    serve_samples,
    thumbs_loaded,
    wait_for_new_results,
)
from tests.conftest import REPO, SAMPLES, make_settings

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)

SCREENSHOT = REPO / "docs" / "screenshot.png"


@pytest.mark.timeout(300)
def test_page_upload_detail_similar_and_text_search(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    open_page(pg, server)
    # the stand-in model is announced, the header shows the collection
    pg.wait_for_selector("#standin-banner:not([hidden])")
    assert "scores are meaningless" in pg.inner_text("#standin-banner")
    pg.wait_for_selector("[data-testid=modality-CT]", state="attached")
    assert "10" in pg.inner_text("#stats")

    # searching with nothing shows a readable message, not a crash
    pg.click("#search-button")
    assert "Choose or drop an image" in pg.inner_text("#error")

    # upload a DICOM: it searches at once; the best hit is the same image with score 1.0
    pg.set_input_files("#file-input", str(SAMPLES / "CT_small.dcm"))
    wait_for_new_results(pg, "0")
    thumbs_loaded(pg)
    assert pg.is_hidden("#error")
    cards = pg.query_selector_all("[data-testid=result]")
    assert len(cards) == 10
    first = cards[0]
    assert first.get_attribute("data-source") == "CT_small.dcm"
    assert float(first.get_attribute("data-score")) == pytest.approx(1.0, abs=1e-4)
    assert first.inner_text().count("1.000") == 1
    assert "CT" in first.inner_text() and "ct-chest" in first.inner_text()
    assert pg.get_attribute("#query-summary", "data-kind") == "image"
    pg.mouse.move(0, 0)
    shot = save_shot(pg, "01-image-results.png")
    if os.environ.get("MEDSEARCH_UPDATE_SCREENSHOT") == "1":
        save_docs_png(shot, SCREENSHOT)

    # keyboard: Tab reaches the result cards; Enter opens the detail panel; Escape closes it
    pg.focus("#search-button")
    for _ in range(40):
        pg.keyboard.press("Tab")
        if pg.evaluate("document.activeElement.dataset.testid") == "result":
            break
    else:
        pytest.fail("Tab never reached a result card")
    pg.keyboard.press("ArrowRight")
    assert pg.evaluate("document.activeElement.dataset.rank") == "2"
    pg.keyboard.press("ArrowLeft")
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#detail:not([hidden])")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")
    assert pg.evaluate("document.activeElement.dataset.rank") == "1"

    # click the best hit: preview, metadata and UIDs
    pivot_id = first.get_attribute("data-id")
    first.click()
    pg.wait_for_selector("#detail:not([hidden])")
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )
    pg.wait_for_selector("#detail-meta[data-loaded=true]")
    uids = {key: pg.inner_text(f"[data-testid=uid-{key}]") for key in ("study", "series", "sop")}
    assert uids["study"].startswith("1.3.6.1.4.1.5962.")
    assert uids["sop"] == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    meta = pg.inner_text("#detail-meta")
    assert "CT" in meta and "ct-chest" in meta and "CT_small.dcm" in meta
    assert pg.is_hidden("#viewer-link")  # no viewer template configured
    save_shot(pg, "02-detail.png")

    # find similar: the grid shows the pivot's neighbours (never the pivot itself)
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#find-similar")
    wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    assert pg.is_hidden("#detail")
    assert pg.get_attribute("#results", "data-query") == "id"
    assert pg.get_attribute("#query-summary", "data-pivot") == pivot_id
    ids = [c.get_attribute("data-id") for c in pg.query_selector_all("[data-testid=result]")]
    assert len(ids) == 9 and pivot_id not in ids
    assert "similar to" in pg.inner_text("#query-summary").lower()
    save_shot(pg, "03-similar.png")

    # text search with Enter (after removing the image); hits carry the text score
    pg.click("#file-clear")
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("#text-input", "chest radiograph")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    assert pg.get_attribute("#results", "data-query") == "text"
    assert len(pg.query_selector_all("[data-testid=text-score]")) == 10
    assert "chest radiograph" in pg.inner_text("#query-summary")

    # filters are sent: only CR images
    seq = pg.get_attribute("#results", "data-seq")
    pg.check("[data-testid=modality-CR]")
    wait_for_new_results(pg, seq)
    modalities = {c.inner_text() for c in pg.query_selector_all("[data-testid=result] .mod")}
    assert modalities == {"CR"}
    save_shot(pg, "04-text-filtered.png")

    # an API error is shown readably ({code, message} from the server)
    seq = pg.get_attribute("#results", "data-seq")
    pg.set_input_files("#file-input", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}])
    pg.wait_for_selector("#error:not([hidden])")
    error = pg.inner_text("#error")
    assert "HTTP 4" in error and "{" not in error
    save_shot(pg, "05-error.png")
    assert pg.get_attribute("#results", "data-seq") == seq
    assert pg.query_selector_all("[data-testid=result]") == []  # no stale results under the failed query

    assert not [e for e in errors if "notes.png" not in e and "status of 4" not in e], errors


@pytest.mark.timeout(300)
def test_page_with_api_key_fetches_thumbnails_as_blobs(keyed_server: str, page: Page) -> None:
    pg = page
    open_page(pg, keyed_server)
    # without a key: the header says so, and a search shows the 401 readably
    pg.wait_for_function("() => document.getElementById('stats').innerText.includes('API key needed')")
    pg.set_input_files("#file-input", str(SAMPLES / "MR_small.dcm"))
    pg.wait_for_selector("#error:not([hidden])")
    error = pg.inner_text("#error")
    assert "unauthorized" in error and "HTTP 401" in error and "API key" in error

    # save the key: it is kept in localStorage and sent as a bearer token
    if not pg.is_visible("#api-key-input"):
        pg.click("#key-summary")
    pg.fill("#api-key-input", KEY)
    pg.press("#api-key-input", "Enter")
    assert pg.evaluate("localStorage.getItem('medsearch.apiKey')") == KEY
    pg.wait_for_function("() => document.getElementById('stats').innerText.includes('images')")
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#search-button")
    wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    assert pg.is_hidden("#error")
    first = pg.query_selector("[data-testid=result]")
    assert first is not None and first.get_attribute("data-source") == "MR_small.dcm"
    srcs = pg.eval_on_selector_all("#results img", "imgs => imgs.map(i => i.src)")
    assert srcs and all(src.startswith("blob:") for src in srcs)

    first.click()
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview');"
        " return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }"
    )
    pg.wait_for_selector("#detail-meta[data-loaded=true]")
    study_uid = pg.inner_text("[data-testid=uid-study]")
    assert pg.get_attribute("#viewer-link", "href") == VIEWER.format(study_instance_uid=study_uid)
    assert pg.is_visible("#viewer-link")
    save_shot(pg, "06-keyed-detail.png")


@pytest.fixture
def summary_server(indexed: tuple[Path, Path], tiny_model: Path, tiny_gemma: Path, tmp_path: Path) -> Iterator[str]:
    """The service with summaries on (transformers backend, tiny Gemma 3 stand-in), on its own copy of the data."""
    data_dir = tmp_path / "summary-data"
    shutil.copytree(indexed[1], data_dir)  # indexed[1] is only open while keyed_server runs (function scope)
    with serve_samples(
        data_dir,
        tiny_model,
        MEDSEARCH_SUMMARIZER="transformers",
        MEDSEARCH_SUMMARY_MODEL=str(tiny_gemma),
        MEDSEARCH_SUMMARY_MAX_NEW_TOKENS="300",
    ) as base:
        yield base


def _watch_summary_text(page: Page) -> None:
    page.evaluate(
        "() => { window.__summaryUpdates = 0; new MutationObserver(() => window.__summaryUpdates++)"
        ".observe(document.getElementById('summary-text'), {childList: true, characterData: true, subtree: true}); }"
    )


@pytest.mark.timeout(300)
def test_page_summarize_streams_text_with_notice_and_cancels(server: str, summary_server: str, page: Page) -> None:
    pg = page
    # summaries off (the default): the button says so and explains how to turn them on
    open_page(pg, server)
    pg.set_input_files("#file-input", str(SAMPLES / "CT_small.dcm"))
    wait_for_new_results(pg, "0")
    pg.wait_for_selector("#summarize-button[data-enabled=false]")
    assert pg.is_disabled("#summarize-button") and "off" in pg.inner_text("#summarize-button")
    assert "MEDSEARCH_SUMMARIZER" in (pg.get_attribute("#summarize-button", "title") or "")
    assert pg.is_hidden("#summary-standin-banner")

    # summaries on: click, the text streams into the panel, the notice and the compared cases show
    open_page(pg, summary_server)
    pg.set_input_files("#file-input", str(SAMPLES / "CT_small.dcm"))
    wait_for_new_results(pg, "0")
    thumbs_loaded(pg)
    pg.wait_for_selector("#summarize-button[data-enabled=true]:not([disabled])")
    assert "stand-in summarizer" in pg.inner_text("#summary-standin-banner")  # the tiny Gemma is announced
    _watch_summary_text(pg)
    pg.click("#summarize-button")
    pg.wait_for_selector("#summary-panel:not([hidden])")
    pg.wait_for_function("() => document.getElementById('summary-panel').dataset.state === 'done'", timeout=120_000)
    text = pg.inner_text("#summary-text")
    assert len(text.strip()) > 20
    assert pg.evaluate("window.__summaryUpdates") > 1  # arrived in pieces, not as one block
    notice = pg.inner_text("#summary-notice")
    assert notice.startswith("Not for diagnosis") and "qualified clinician" in notice
    compared = pg.query_selector_all("[data-testid=result].compared")
    ids = [c.get_attribute("data-id") for c in compared]
    first = pg.query_selector("[data-testid=result]")
    assert len(compared) == 4 and first is not None and first.get_attribute("data-id") not in ids  # not itself
    assert pg.is_hidden("#summary-error")
    save_shot(pg, "07-summary.png")

    # another query: Cancel stops the stream, the partial text stays, the button is usable again
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#file-clear")
    pg.fill("#text-input", "head")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, seq)
    assert pg.is_hidden("#summary-panel")  # a new search closes the old summary
    pg.click("#summarize-button")
    pg.wait_for_function("() => document.getElementById('summary-text').textContent.length > 0", timeout=120_000)
    pg.click("#summary-cancel")
    pg.wait_for_function("() => document.getElementById('summary-panel').dataset.state === 'cancelled'")
    assert pg.inner_text("#summary-state") == "cancelled" and pg.is_enabled("#summarize-button")
    partial = pg.inner_text("#summary-text")
    pg.wait_for_timeout(1000)
    assert pg.inner_text("#summary-text") == partial  # nothing more arrives after a cancel


_PIXEL_SUM = (
    "sel => { const i = document.querySelector(sel); const c = document.createElement('canvas');"
    " c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0);"
    " const d = x.getImageData(0, 0, c.width, c.height).data; let s = 0;"
    " for (let j = 0; j < d.length; j += 4) s += d[j];"
    " return s; }"
)


def _loaded(page: Page, selector: str) -> None:
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.src && i.complete && i.naturalWidth > 0; }",
        arg=selector,
    )


def _compare_ready(page: Page, window: str) -> None:
    page.wait_for_function(
        "w => { const p = document.getElementById('compare');"
        " return p.dataset.state === 'ready' && p.dataset.window === w; }",
        arg=window,
    )
    _loaded(page, "#compare-query-img")
    _loaded(page, "#compare-hit-img")


@pytest.mark.timeout(300)
def test_page_query_preview_header_compare_and_presets(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    open_page(pg, server)
    pg.fill("#k-input", "4")
    # the filter fields and grouping are the API's vocabulary, in its order (no copy in the page)
    vocabulary = json.loads(pg.evaluate("fetch('v1/vocabulary').then(r => r.text())"))
    shown = pg.eval_on_selector_all("#filter-fields [data-filter]", "ns => ns.map(n => n.dataset.filter)")
    homed = pg.eval_on_selector_all("[data-filter][data-home]", "ns => ns.map(n => n.dataset.filter)")
    assert homed == ["report"]  # the report words have their own box beside the text box (reports.js)
    assert shown == [f["name"] for f in vocabulary["filters"] if f["name"] not in homed]
    assert pg.eval_on_selector_all("#group-by option", "os => os.map(o => o.value)") == vocabulary["group_by"]

    # the DICOM query is shown, rendered by the server with the window its indexed copy got
    pg.set_input_files("#file-input", str(SAMPLES / "CT_small.dcm"))
    wait_for_new_results(pg, "0")
    _loaded(pg, "#file-thumb")
    assert pg.get_attribute("#file-thumb", "data-source") == "server"
    assert pg.get_attribute("#file-thumb", "data-window") == "ct:soft-tissue"
    _loaded(pg, "[data-testid=query-thumb]")

    # the header: total, page and the active filters
    assert pg.inner_text("#results-total") == "Results 1–4 of 10 images"
    assert pg.inner_text("#results-page") == "page 1" and pg.inner_text("#results-filters") == "no filters"
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#page-next")
    wait_for_new_results(pg, seq)
    assert pg.inner_text("#results-total") == "Results 5–8 of 10 images" and pg.inner_text("#results-page") == "page 2"
    seq = pg.get_attribute("#results", "data-seq")
    pg.check("[data-testid=modality-CT]")
    wait_for_new_results(pg, seq)
    assert pg.inner_text("#results-total") == "Results 1–2 of 2 images" and pg.inner_text("#results-page") == "page 1"
    # what the page sends: read on the way through (Chromium shows multipart bodies only to a route)
    sent: list[bytes] = []

    def record(route: Route) -> None:
        sent.append(route.request.post_data_buffer or b"")
        route.continue_()

    pg.route("**/v1/search/image", record)
    seq = pg.get_attribute("#results", "data-seq")
    pg.select_option("#group-by", "study")
    wait_for_new_results(pg, seq)
    chips = pg.inner_text("#results-filters")
    assert "Modality: CT" in chips and "grouped by study" in chips
    body = sent[-1]
    assert b'name="modality"\r\n\r\nCT' in body and b'name="group_by"\r\n\r\nstudy' in body
    assert b"show_duplicates" not in body  # off unless asked for

    # the duplicates toggle sends show_duplicates and says so in the header
    seq = pg.get_attribute("#results", "data-seq")
    pg.check("#show-duplicates")
    wait_for_new_results(pg, seq)
    assert b'name="show_duplicates"\r\n\r\ntrue' in sent[-1]
    pg.unroute("**/v1/search/image")
    assert "duplicates shown" in pg.inner_text("#results-filters")
    pg.click("#filters-reset")
    pg.wait_for_function("() => document.getElementById('results-filters').innerText === 'no filters'")

    # dates are ISO text fields; anything else is refused with the format to use
    assert pg.get_attribute("[data-testid=filter-date_from]", "placeholder") == "YYYY-MM-DD"
    assert pg.get_attribute("[data-testid=filter-date_from]", "type") == "text"
    pg.fill("[data-testid=filter-date_from]", "01/19/2004")
    pg.press("[data-testid=filter-date_from]", "Tab")
    pg.wait_for_selector("#error:not([hidden])")
    assert "use YYYY-MM-DD" in pg.inner_text("#error")
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("[data-testid=filter-date_from]", "2004-01-19")
    pg.press("[data-testid=filter-date_from]", "Tab")
    wait_for_new_results(pg, seq)
    chips = pg.eval_on_selector_all("#results-filters .filter-chip", "cs => cs.map(c => c.textContent)")
    assert [c for c in chips if c.endswith(": 2004-01-19")] == chips, chips  # the label is the vocabulary's
    pg.fill("[data-testid=filter-date_from]", "")

    # the detail panel: readable transfer syntax and times; then compare the query with the hit
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("#k-input", "10")
    pg.click("#search-button")
    wait_for_new_results(pg, seq)
    pg.click("[data-testid=result][data-source='CT_small.dcm']")
    pg.wait_for_selector("#detail-meta[data-loaded=true]")
    assert pg.inner_text("[data-field=transfer_syntax]") == "Explicit VR Little Endian"
    assert pg.get_attribute("[data-field=transfer_syntax]", "title") == "1.2.840.10008.1.2.1"
    indexed_at = pg.inner_text("[data-field=indexed_at]")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}( UTC)?", indexed_at), indexed_at
    pg.click("#compare-open")
    _compare_ready(pg, "")
    assert pg.get_attribute("#compare-note", "data-presets") == "on"
    before = pg.evaluate(_PIXEL_SUM, "#compare-hit-img")
    query_before = pg.evaluate(_PIXEL_SUM, "#compare-query-img")
    assert before == query_before  # the same image on both sides, as indexed
    pg.click("[data-testid=preset-lung]")
    _compare_ready(pg, "lung")
    assert pg.get_attribute("#compare-hit-img", "data-window") == "ct:lung"
    assert pg.get_attribute("#compare-query-img", "data-window") == "ct:lung"
    lung = pg.evaluate(_PIXEL_SUM, "#compare-hit-img")
    assert lung != before and pg.evaluate(_PIXEL_SUM, "#compare-query-img") == lung
    pg.click("[data-testid=preset-bone]")
    _compare_ready(pg, "bone")
    assert pg.evaluate(_PIXEL_SUM, "#compare-hit-img") not in (before, lung)
    save_shot(pg, "08-compare.png")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#compare", state="hidden")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")

    # an MR hit: presets change the CT query only, and say why
    pg.click("[data-testid=result][data-source='MR_small.dcm']")
    pg.click("#compare-open")
    _compare_ready(pg, "")
    mr_before = pg.evaluate(_PIXEL_SUM, "#compare-hit-img")
    assert "the hit is MR (DICOM)" in pg.inner_text("#compare-note")
    pg.click("[data-testid=preset-brain]")
    _compare_ready(pg, "brain")
    assert pg.get_attribute("#compare-query-img", "data-window") == "ct:brain"
    assert pg.get_attribute("#compare-hit-img", "data-window") != "ct:brain"
    assert pg.evaluate(_PIXEL_SUM, "#compare-hit-img") == mr_before
    pg.keyboard.press("Escape")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")

    # an MR query with an MR hit: presets are off, with the reason
    seq = pg.get_attribute("#results", "data-seq")
    pg.set_input_files("#file-input", str(SAMPLES / "MR_small.dcm"))
    wait_for_new_results(pg, seq)
    pg.click("[data-testid=result][data-source='MR_small.dcm']")
    pg.click("#compare-open")
    _compare_ready(pg, "")
    assert pg.get_attribute("#compare-note", "data-presets") == "off"
    assert pg.is_disabled("[data-testid=preset-lung]") and "apply to CT DICOM" in pg.inner_text("#compare-note")
    pg.keyboard.press("Escape")
    pg.keyboard.press("Escape")

    # an error stays in view below the sticky top bar wherever the page is scrolled
    pg.set_viewport_size({"width": 1400, "height": 520})
    pg.evaluate("document.getElementById('file-clear').click(); document.getElementById('search-form').requestSubmit()")
    pg.wait_for_selector("#error:not([hidden])")
    assert pg.query_selector_all("[data-testid=result]")  # a form error keeps the results: the page still scrolls
    pg.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    box = pg.evaluate(
        "() => { const e = document.getElementById('error').getBoundingClientRect();"
        " const bar = document.querySelector('.topbar').getBoundingClientRect();"
        " const hit = document.elementFromPoint(e.left + e.width / 2, e.top + e.height / 2);"
        " const inside = document.getElementById('error').contains(hit);"
        " return {top: e.top, bottom: e.bottom, bar: bar.bottom, inside, scrolled: window.scrollY}; }"
    )
    assert box["scrolled"] > 200 and box["top"] >= box["bar"] and box["bottom"] <= 520 and box["inside"], box
    save_shot(pg, "09-sticky-error.png")
    assert not errors, errors


@pytest.mark.timeout(300)
def test_page_counts_skipped_non_image_objects(tmp_path: Path, tiny_model: Path, page: Page) -> None:
    """An ECG and an RT plan next to an image: the top bar counts them as skipped, by SOP class (a structured report
    is no longer skipped: it becomes its study's report)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("CT_small.dcm", "waveform_ecg.dcm", "rtplan.dcm"):
        shutil.copy(str(get_testdata_file(name)), folder / name)
    data_dir = tmp_path / "data"
    with Collection(make_settings(data_dir, tiny_model)) as collection:
        summary = run_index(collection, [folder], IndexOptions())
    assert summary.indexed == 1 and summary.failed == 0 and sum(summary.not_images.values()) == 2, summary
    with serve_samples(data_dir, tiny_model) as base:
        open_page(page, base)
        page.wait_for_selector("[data-testid=not-images]")
        assert page.inner_text("[data-testid=not-images]") == "2 non-image objects skipped"
        title = page.get_attribute("[data-testid=not-images]", "title") or ""
        assert sorted(title.split("\n")) == ["1 12-lead ECG Waveform Storage", "1 RT Plan Storage"]
