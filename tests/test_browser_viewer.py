"""The detail panel's image viewer in Chromium: W/L drag and presets checked pixel by pixel against DICOM's linear
VOI formula, invert, zoom and screenToImage, reset, frames by keyboard, results by keyboard, tab order."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pydicom
import pytest
from playwright.sync_api import Page
from pydicom.pixels.processing import apply_modality_lut

from tests.browser import open_page, save_shot, wait_for_new_results
from tests.conftest import REPO, SAMPLES

pytestmark = pytest.mark.peers  # starts Debian's Chromium (not in `make test-fast`)

DOCS_SHOT = REPO / "docs" / "viewer.png"
# the picture on screen, read back through a canvas (the red channel of a grey PNG)
PIXELS = (
    "() => { const i = document.getElementById('detail-preview'); const c = document.createElement('canvas');"
    " c.width = i.naturalWidth; c.height = i.naturalHeight; const x = c.getContext('2d'); x.drawImage(i, 0, 0);"
    " const d = x.getImageData(0, 0, c.width, c.height).data; const out = [];"
    " for (let j = 0; j < d.length; j += 4) out.push(d[j]);"
    " return {w: c.width, h: c.height, v: out}; }"
)


# Watches the picture on screen: how often it had no natural size (no pixels) right after its src changed and at
# each animation frame, and how many times its src changed.
WATCH_PICTURE = """() => {
  const i = document.getElementById('detail-preview');
  const w = { blank: 0, swaps: 0, frames: 0, on: true };
  const look = () => { if (!i.naturalWidth) w.blank += 1; };
  const obs = new MutationObserver(() => { w.swaps += 1; look(); });
  obs.observe(i, { attributes: true, attributeFilter: ['src'] });
  const tick = () => { if (!w.on) return; w.frames += 1; look(); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  w.stop = () => { w.on = false; obs.disconnect(); return { blank: w.blank, swaps: w.swaps, frames: w.frames }; };
  window.__watch = w;
}"""


def stored(name: str, frame: int = 0) -> np.ndarray[Any, Any]:
    """The file's values after the modality LUT (HU for CT), read here with pydicom, not by the code under test."""
    ds = pydicom.dcmread(SAMPLES / name)
    arr = ds.pixel_array if int(ds.get("NumberOfFrames") or 1) == 1 else ds.pixel_array[frame]
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def linear_voi(values: np.ndarray[Any, Any], centre: float, width: float) -> np.ndarray[Any, Any]:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255."""
    return np.rint(np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)


def shown(page: Page) -> np.ndarray[Any, Any]:
    got = page.evaluate(PIXELS)
    return np.asarray(got["v"], dtype=np.float64).reshape(got["h"], got["w"])


def settled(page: Page, after: str | None) -> dict[str, str]:
    """Wait for a new picture (the stage's seq moves past `after`) and no request left; the stage's dataset."""
    page.wait_for_function(
        "seq => { const s = document.getElementById('viewer-stage');"
        " return s.dataset.state === 'ready' && s.dataset.seq !== seq; }",
        arg=after,
    )
    return dict(page.eval_on_selector("#viewer-stage", "s => ({...s.dataset})"))


def assert_formula(page: Page, name: str, wl: dict[str, str], frame: int = 0, inverted: bool = False) -> None:
    """Every pixel on screen is the formula at the W/L the toolbar shows."""
    centre, width = float(wl["wc"]), float(wl["ww"])
    label = page.inner_text("#viewer-wl")
    assert label.startswith(f"W {width:g} L {centre:g}"), (label, wl)
    expected = linear_voi(stored(name, frame), centre, width)
    if inverted:
        expected = 255 - expected
    got = shown(page)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1, (name, wl)


def _save_for_docs(png: bytes) -> None:
    """docs/viewer.png: the panel as a 256-colour PNG (greys and the few UI colours survive median cut)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(DOCS_SHOT, optimize=True)
    assert DOCS_SHOT.stat().st_size < 300_000


def open_result(page: Page, source: str) -> dict[str, str]:
    seq = page.get_attribute("#viewer-stage", "data-seq")
    page.click(f"[data-testid=result][data-source='{source}']")
    page.wait_for_selector("#detail:not([hidden])")
    return settled(page, seq)


@pytest.mark.timeout(300)
def test_viewer_window_level_invert_zoom_frames_and_keys(server: str, page: Page) -> None:
    pg = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    open_page(pg, server)
    pg.fill("#k-input", "10")
    pg.fill("#text-input", "any image")
    pg.press("#text-input", "Enter")
    wait_for_new_results(pg, "0")

    # CT: opens at the CT preset in use, every pixel DICOM's linear window on HU
    wl = open_result(pg, "CT_small.dcm")
    assert (wl["wc"], wl["ww"], wl["invert"]) == ("40", "400", "false")
    assert pg.inner_text("#viewer-wl") == "W 400 L 40 HU"
    assert_formula(pg, "CT_small.dcm", wl)

    # a drag: right widens, up lowers the level (2 HU per pixel at width 400); the last position wins
    box = pg.locator("#viewer-stage").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    pg.evaluate(WATCH_PICTURE)
    pg.mouse.move(x, y)
    pg.mouse.down()
    for step in range(1, 13):
        pg.mouse.move(x + 5 * step, y - 10 * step / 3)
    pg.mouse.up()
    pg.wait_for_function("() => document.getElementById('viewer-stage').dataset.ww === '520'")
    wl = settled(pg, None)
    assert (wl["wc"], wl["ww"]) == ("-40", "520")
    # meanwhile the picture on screen always had its pixels: each render is decoded before it is swapped in (a
    # region box and the zoom map by its natural size; a drag begun then used to be ignored)
    watched = pg.evaluate("() => window.__watch.stop()")
    assert watched["swaps"] >= 1 and watched["frames"] >= 1 and watched["blank"] == 0, watched
    assert pg.inner_text("#viewer-wl") == "W 520 L -40 HU"
    assert_formula(pg, "CT_small.dcm", wl)

    # presets show their numbers and apply them
    lung = pg.locator("[data-testid=viewer-preset-lung]")
    assert lung.inner_text() == "lung W 1500 L -600"
    seq = wl["seq"]
    lung.click()
    wl = settled(pg, seq)
    assert (wl["wc"], wl["ww"]) == ("-600", "1500") and lung.get_attribute("aria-pressed") == "true"
    assert_formula(pg, "CT_small.dcm", wl)

    # invert (the I key on the focused image), then zoom in and map the screen back to source pixels
    pg.focus("#viewer-stage")
    pg.keyboard.press("i")
    wl = settled(pg, wl["seq"])
    assert wl["invert"] == "true"
    assert_formula(pg, "CT_small.dcm", wl, inverted=True)
    pg.keyboard.press("+")
    assert pg.get_attribute("#viewer-stage", "data-zoom") == "1.25"
    mapped = pg.evaluate(
        "async () => { const v = await import('./static/viewer.js');"
        " const r = document.getElementById('detail-preview').getBoundingClientRect();"
        " const c = v.screenToImage(r.left + r.width / 2, r.top + r.height / 2);"
        " const fit = Math.min(r.width, r.height);"
        " const corner = v.screenToImage(r.left + r.width / 2 - fit / 2 + 0.01, r.top + r.height / 2 - fit / 2 + 0.01);"
        " return {c, corner}; }"
    )
    assert mapped["c"]["x"] == pytest.approx(64, abs=0.5) and mapped["c"]["y"] == pytest.approx(64, abs=0.5)
    assert mapped["corner"]["inside"] and mapped["corner"]["x"] < 0.5 and mapped["corner"]["y"] < 0.5
    save_shot(pg, "10-viewer.png")
    if os.environ.get("MEDSEARCH_UPDATE_SCREENSHOT") == "1":
        _save_for_docs(pg.locator("#detail").screenshot())
    # Shift+drag pans (no new window), the wheel zooms about the pointer
    centre = pg.locator("#viewer-stage").bounding_box()
    assert centre is not None
    cx, cy = centre["x"] + centre["width"] / 2, centre["y"] + centre["height"] / 2
    pg.keyboard.down("Shift")
    pg.mouse.move(cx, cy)
    pg.mouse.down()
    pg.mouse.move(cx + 30, cy + 20, steps=3)
    pg.mouse.up()
    pg.keyboard.up("Shift")
    assert pg.eval_on_selector("#detail-preview", "i => i.style.transform") == "translate(30px, 20px) scale(1.25)"
    assert pg.get_attribute("#viewer-stage", "data-seq") == wl["seq"]  # panning asks the server for nothing
    pg.mouse.wheel(0, -100)
    pg.wait_for_function("() => Number(document.getElementById('viewer-stage').dataset.zoom) > 1.25")
    # reset: the default window, no invert, no zoom
    pg.keyboard.press("r")
    wl = settled(pg, wl["seq"])
    assert (wl["wc"], wl["ww"], wl["invert"]) == ("40", "400", "false")
    assert pg.get_attribute("#viewer-stage", "data-zoom") == "1"

    # tab order: close, the toolbar's controls in reading order, then the image; focus is visible
    pg.focus("#detail-close")
    order = []
    for _ in range(7):
        pg.keyboard.press("Tab")
        order.append(pg.evaluate("document.activeElement.id || document.activeElement.dataset.testid"))
    toolbar = ["viewer-invert", "viewer-zoom-out", "viewer-zoom-in", "viewer-pan", "viewer-reset", "viewer-preset-lung"]
    assert order[:6] == toolbar, order
    while pg.evaluate("document.activeElement.id") != "viewer-stage":
        pg.keyboard.press("Tab")
    assert pg.eval_on_selector("#viewer-stage", "s => getComputedStyle(s).boxShadow") != "none"

    # results by keyboard: n / p open the next / previous result in the panel, Escape closes and focus returns
    cards = [c.get_attribute("data-id") for c in pg.query_selector_all("[data-testid=result]")]
    at = cards.index(pg.get_attribute("#detail", "data-id"))
    step = 1 if at + 1 < len(cards) else -1
    pg.keyboard.press("n" if step == 1 else "p")
    pg.wait_for_function("id => document.getElementById('detail').dataset.id === id", arg=cards[at + step])
    pg.keyboard.press("p" if step == 1 else "n")
    pg.wait_for_function("id => document.getElementById('detail').dataset.id === id", arg=cards[at])
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")
    assert pg.evaluate("document.activeElement.dataset.id") == cards[at]
    pg.keyboard.press("Enter")  # and Enter opens the focused result again
    pg.wait_for_selector("#detail:not([hidden])")
    pg.keyboard.press("Escape")
    pg.wait_for_selector("#detail", state="hidden")

    # frames of a multi-frame MR by the arrow keys, each frame at its own value range (no file window)
    wl = open_result(pg, "emri_small.dcm")
    assert pg.inner_text("#frame-pos") == "frame 6 of 10" and wl["frame"] == "6"
    assert_formula(pg, "emri_small.dcm", wl, frame=5)
    pg.focus("#viewer-stage")
    pg.keyboard.press("ArrowRight")
    wl = settled(pg, wl["seq"])
    assert wl["frame"] == "7" and pg.inner_text("#frame-pos") == "frame 7 of 10"
    assert_formula(pg, "emri_small.dcm", wl, frame=6)
    pg.keyboard.press("ArrowLeft")
    pg.keyboard.press("ArrowLeft")
    pg.wait_for_function("() => document.getElementById('viewer-stage').dataset.frame === '5'")
    assert pg.inner_text("#frame-pos") == "frame 5 of 10"
    pg.keyboard.press("Escape")
    assert not errors, errors
