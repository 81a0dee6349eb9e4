"""Region queries on the page in Chromium: a box dragged on the query preview or on a result's detail image is
sent as roi=x,y,w,h in the source image's pixels (the frame shown is the frame searched); Escape cancels.

Runs against `medsearch serve` on data/samples (tests/browser.py's fixtures). With MEDSEARCH_UPDATE_SCREENSHOT=1
the region query's screenshot is written to docs/region-query.png."""

from __future__ import annotations

import math
import os
from typing import Any

import pydicom
import pytest
from playwright.sync_api import Page

from tests.browser import open_page, save_docs_png, save_shot, thumbs_loaded, wait_for_new_results
from tests.conftest import REPO, SAMPLES

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)

SCREENSHOT = REPO / "docs" / "region-query.png"


def _source_size(name: str) -> tuple[int, int]:
    ds = pydicom.dcmread(SAMPLES / name, stop_before_pixels=True)
    return int(ds.Columns), int(ds.Rows)


def _layout(pg: Page, selector: str) -> dict[str, float]:
    """Where the picture's pixels are on screen: object-fit: contain inside the element's content box."""
    box: dict[str, float] = pg.eval_on_selector(
        selector,
        "e => { const r = e.getBoundingClientRect(); return {left: r.left + e.clientLeft, top: r.top + e.clientTop,"
        " w: e.clientWidth, h: e.clientHeight, nw: e.naturalWidth, nh: e.naturalHeight}; }",
    )
    scale = min(box["w"] / box["nw"], box["h"] / box["nh"])
    width, height = box["nw"] * scale, box["nh"] * scale
    return {"left": box["left"] + (box["w"] - width) / 2, "top": box["top"] + (box["h"] - height) / 2,
            "width": width, "height": height}  # fmt: skip


def _drag(pg: Page, selector: str, size: tuple[int, int], a: tuple[float, float], b: tuple[float, float]) -> float:
    """Drag from source pixel a to source pixel b; returns the source pixels one screen pixel spans."""
    box = _layout(pg, selector)
    sx, sy = box["width"] / size[0], box["height"] / size[1]
    pg.mouse.move(box["left"] + a[0] * sx, box["top"] + a[1] * sy)
    pg.mouse.down()
    pg.mouse.move(box["left"] + (a[0] + b[0]) / 2 * sx, box["top"] + (a[1] + b[1]) / 2 * sy, steps=3)
    pg.mouse.move(box["left"] + b[0] * sx, box["top"] + b[1] * sy, steps=3)
    pg.mouse.up()
    return max(1 / sx, 1 / sy)


def _expected(a: tuple[float, float], b: tuple[float, float]) -> list[int]:
    return [math.floor(a[0]), math.floor(a[1]), math.ceil(b[0]) - math.floor(a[0]), math.ceil(b[1]) - math.floor(a[1])]


def _close(got: list[int], want: list[int], slack: float) -> bool:
    """Equal up to the mouse landing on whole screen pixels (slack: source pixels per screen pixel, plus one)."""
    return all(abs(g - w) <= 2 * slack + 1 for g, w in zip(got, want, strict=True))


# The form fields of every multipart request the page sends (Chromium does not hand a body with a file to the
# test): recorded by a wrapper around fetch, in the page, before any module runs.
RECORD_FORMS = """
window.__forms = [];
const realFetch = window.fetch;
window.fetch = (path, options = {}) => {
  if (options.body instanceof FormData) {
    const fields = {};
    for (const [key, value] of options.body.entries()) if (typeof value === "string") fields[key] = value;
    window.__forms.push({ path: String(path), fields });
  }
  return realFetch(path, options);
};
"""


def _last_form(pg: Page, path: str) -> dict[str, str]:
    forms = [f for f in pg.evaluate("window.__forms") if f["path"].endswith(path)]
    assert forms, f"no form sent to {path}"
    return dict(forms[-1]["fields"])


def _scores(pg: Page) -> dict[str, float]:
    cards = pg.query_selector_all("[data-testid=result]")
    return {str(c.get_attribute("data-id")): float(c.get_attribute("data-score") or "nan") for c in cards}


def _upload(pg: Page, name: str) -> dict[str, Any]:
    """Choose a file: the whole-image search runs at once; the query preview shows what the server decoded."""
    seq = pg.get_attribute("#results", "data-seq")
    with pg.expect_response(lambda r: r.url.endswith("/v1/render")) as rendered:
        pg.set_input_files("#file-input", str(SAMPLES / name))
    wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    pg.wait_for_function(
        "() => { const i = document.getElementById('query-preview-img');"
        " return !document.getElementById('query-preview').hidden && i.complete && i.naturalWidth > 0; }"
    )
    return dict(rendered.value.headers)


@pytest.mark.timeout(300)
def test_a_box_on_the_query_preview_searches_that_region(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.add_init_script(RECORD_FORMS)
    open_page(pg, server)

    # a radiograph of 1841 x 1955 shown as a 256-pixel rendering: the box is read in the source's pixels
    name = "RG1_J2KI.dcm"
    size = _source_size(name)
    headers = _upload(pg, name)
    assert headers["x-medsearch-size"] == f"{size[0]}x{size[1]}"
    assert pg.eval_on_selector("#query-preview-img", "i => Math.max(i.naturalWidth, i.naturalHeight)") <= 256
    whole = _scores(pg)
    self_id = pg.get_attribute("[data-testid=result][data-rank='1']", "data-id")
    assert (
        pg.get_attribute("[data-testid=result][data-rank='1']", "data-source") == name and whole[str(self_id)] > 0.999
    )
    assert pg.is_hidden("#results-region")

    # Escape cancels a box: nothing is searched
    seq = pg.get_attribute("#results", "data-seq")
    _drag(pg, "#query-preview-img", size, (200.5, 300.5), (900.5, 1000.5))
    assert pg.is_visible("[data-testid=query-roi-box]") and pg.is_visible("[data-testid=query-roi-search]")
    pg.keyboard.press("Escape")
    assert pg.is_hidden("[data-testid=query-roi-box]") and pg.is_hidden("[data-testid=query-roi-search]")
    assert (
        pg.get_attribute("#results", "data-seq") == seq
        and pg.get_attribute("#query-preview .roi-host", "data-roi") is None
    )

    # a box from source pixel (460, 490) to (1380, 1170): its label and the request say that region
    a, b = (460.5, 490.5), (1380.5, 1170.5)
    slack = _drag(pg, "#query-preview-img", size, a, b)
    shown = [int(v) for v in str(pg.get_attribute("#query-preview .roi-host", "data-roi")).split(",")]
    assert _close(shown, _expected(a, b), slack), (shown, _expected(a, b), slack)
    assert f"{shown[2]} × {shown[3]} px" in pg.inner_text("[data-testid=query-roi-label]")
    pg.click("[data-testid=query-roi-search]")
    wait_for_new_results(pg, seq)
    thumbs_loaded(pg)
    roi = ",".join(map(str, shown))
    sent = _last_form(pg, "v1/search/image")
    assert (sent.get("roi"), sent.get("frame")) == (roi, None)  # one frame: nothing to choose
    assert pg.inner_text("#results-region") == f"region {roi}"  # the API's record of the query
    assert f"region {roi}" in pg.inner_text("#query-summary")
    region = _scores(pg)
    assert region[str(self_id)] < 0.999 and region != whole  # a part of the picture is another query
    assert pg.is_visible("[data-testid=query-roi-box]")  # the box stays on what was searched
    pg.mouse.move(0, 0)
    shot = save_shot(pg, "roi-01-region-query.png")
    if os.environ.get("MEDSEARCH_UPDATE_SCREENSHOT") == "1":
        save_docs_png(shot, SCREENSHOT)

    # Escape in a result's detail closes the detail: the box searched stays on the preview
    pg.click("[data-testid=result]")
    pg.wait_for_selector("#detail:not([hidden])")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")
    assert pg.is_visible("[data-testid=query-roi-box]")

    # Search again is the whole image, and the box goes
    seq = pg.get_attribute("#results", "data-seq")
    pg.click("#search-button")
    wait_for_new_results(pg, seq)
    assert "roi" not in _last_form(pg, "v1/search/image") and pg.is_hidden("#results-region")
    assert pg.is_hidden("[data-testid=query-roi-box]")
    assert errors == []


@pytest.mark.timeout(300)
def test_a_multi_frame_query_searches_the_frame_it_shows_and_tiny_boxes_are_refused(server: str, page: Page) -> None:
    pg = page
    pg.add_init_script(RECORD_FORMS)
    open_page(pg, server)
    name = "emri_small.dcm"  # 10 frames of 64 x 64
    size = _source_size(name)
    headers = _upload(pg, name)
    frame = headers["x-medsearch-frame"]
    assert headers["x-medsearch-frames"] == "10"
    assert frame not in ("", "0", "1") and pg.get_attribute("#query-preview", "data-frame") == frame

    _drag(pg, "#query-preview-img", size, (10.5, 10.5), (13.5, 40.5))  # 4 pixels wide
    assert "too small (at least 8 × 8)" in pg.inner_text("[data-testid=query-roi-label]")
    assert pg.is_disabled("[data-testid=query-roi-search]")

    seq = pg.get_attribute("#results", "data-seq")
    _drag(pg, "#query-preview-img", size, (8.5, 12.5), (40.5, 52.5))
    pg.click("[data-testid=query-roi-search]")
    wait_for_new_results(pg, seq)
    sent = _last_form(pg, "v1/search/image")
    assert sent.get("frame") == frame  # the frame the preview showed, not the API's default
    assert sent.get("roi") == pg.get_attribute("#query-preview .roi-host", "data-roi")
    assert f"of frame {frame}" in pg.inner_text("#query-summary")


def _detail_loaded(pg: Page) -> None:
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )


@pytest.mark.timeout(300)
def test_a_box_on_a_results_detail_image_searches_that_region_of_it(server: str, page: Page) -> None:
    pg = page
    pg.add_init_script(RECORD_FORMS)
    open_page(pg, server)
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("#text-input", "chest radiograph")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, seq)
    card = pg.query_selector("[data-testid=result][data-source='JPEG-LL.dcm']")  # 256 x 1024: tall, letterboxed
    assert card is not None
    pivot = str(card.get_attribute("data-id"))
    card.click()
    pg.wait_for_selector("#detail-meta[data-loaded=true]")
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )
    size = _source_size("JPEG-LL.dcm")

    # without "Search a region…" a drag draws nothing (the viewer's drag stays the viewer's)
    _drag(pg, "#detail-preview", size, (20.5, 100.5), (200.5, 600.5))
    assert pg.is_hidden("[data-testid=detail-roi-box]")
    pg.click("#detail-roi")
    assert pg.get_attribute("#detail-roi", "aria-pressed") == "true"
    a, b = (20.5, 100.5), (200.5, 600.5)
    slack = _drag(pg, "#detail-preview", size, a, b)
    shown = [int(v) for v in str(pg.get_attribute("#detail .roi-host", "data-roi")).split(",")]
    assert _close(shown, _expected(a, b), slack), (shown, _expected(a, b), slack)
    assert pg.get_attribute("#detail-roi", "aria-pressed") == "true"  # still armed: the box waits for its search
    roi = ",".join(map(str, shown))
    seq = pg.get_attribute("#results", "data-seq")
    with pg.expect_request(lambda r: "/similar?" in r.url) as sent:
        pg.click("[data-testid=detail-roi-search]")
    wait_for_new_results(pg, seq)
    assert f"/v1/images/{pivot}/similar?" in sent.value.url and f"roi={roi.replace(',', '%2C')}" in sent.value.url
    assert pg.is_hidden("#detail") and pg.inner_text("#results-region") == f"region {roi}"
    assert pivot not in _scores(pg)  # never the image itself

    # Escape on a box in the detail cancels the box, not the panel
    size = _source_size(str(pg.get_attribute("[data-testid=result]", "data-source")))
    pg.click("[data-testid=result]")
    pg.wait_for_selector("#detail:not([hidden])")
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )
    pg.click("#detail-roi")
    _drag(pg, "#detail-preview", size, (size[0] * 0.2, size[1] * 0.2), (size[0] * 0.7, size[1] * 0.6))
    assert pg.is_visible("[data-testid=detail-roi-box]")
    pg.keyboard.press("Escape")
    assert pg.is_hidden("[data-testid=detail-roi-box]") and pg.is_visible("#detail")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")


def _box_vs_region(pg: Page, size: tuple[int, int]) -> list[float]:
    """|screen position - where the region's corners are on the zoomed picture| for the box's 4 edges (px)."""
    return list(
        pg.evaluate(
            """([cols, rows]) => {
      const img = document.getElementById('detail-preview');
      const [x, y, w, h] = document.querySelector('#detail .roi-host').dataset.roi.split(',').map(Number);
      const r = img.getBoundingClientRect();  // with the viewer's zoom and pan
      const fit = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
      const left = r.left + (r.width - img.naturalWidth * fit) / 2;
      const top = r.top + (r.height - img.naturalHeight * fit) / 2;
      const sx = img.naturalWidth * fit / cols, sy = img.naturalHeight * fit / rows;
      const b = document.querySelector('[data-testid=detail-roi-box]').getBoundingClientRect();
      return [b.left - (left + x * sx), b.top - (top + y * sy), b.right - (left + (x + w) * sx),
              b.bottom - (top + (y + h) * sy)].map(Math.abs);
    }""",
            list(size),
        )
    )


def test_a_drawn_box_follows_the_viewers_zoom_and_pan(server: str, page: Page) -> None:
    pg = page
    open_page(pg, server)
    seq = pg.get_attribute("#results", "data-seq")
    pg.fill("#text-input", "chest radiograph")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, seq)
    pg.click("[data-testid=result][data-source='JPEG-LL.dcm']")
    pg.wait_for_selector("#detail-meta[data-loaded=true]")
    pg.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )
    size = _source_size("JPEG-LL.dcm")
    pg.click("#detail-roi")
    _drag(pg, "#detail-preview", size, (60.5, 300.5), (180.5, 600.5))
    assert pg.is_visible("[data-testid=detail-roi-box]")
    assert max(_box_vs_region(pg, size)) < 1.5
    before = pg.eval_on_selector("[data-testid=detail-roi-box]", "e => e.getBoundingClientRect().width")
    box = _layout(pg, "#detail-preview")
    pg.mouse.move(box["left"] + box["width"] * 0.3, box["top"] + box["height"] * 0.4)
    pg.mouse.wheel(0, -100)  # the viewer zooms about the pointer
    pg.wait_for_function("() => Number(document.getElementById('viewer-stage').dataset.zoom) > 1")
    zoom = float(pg.get_attribute("#viewer-stage", "data-zoom") or 1)
    after = pg.eval_on_selector("[data-testid=detail-roi-box]", "e => e.getBoundingClientRect().width")
    assert abs(after / before - zoom) < 0.02, (before, after, zoom)
    assert max(_box_vs_region(pg, size)) < 1.5
