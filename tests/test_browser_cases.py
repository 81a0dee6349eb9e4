"""The page at series and study level in real Chromium: the level switch, case cards with their strip of slices,
slice stepping in the detail view, two series compared in step, and deep links (/?study=, /?series=, /?sop=)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from indexer.pipeline import run_index
from retrieval.collection import Collection
from tests.browser import open_page, save_shot, serve_samples, wait_for_new_results
from tests.conftest import make_settings

# series name -> (study, patient, slices, shape)
SERIES = {
    "A1": ("A", "PA", 6, "disk"),
    "B1": ("B", "PB", 8, "disk"),
    "B2": ("B", "PB", 4, "bar"),
    "C1": ("C", "PC", 5, "ring"),
}


def _plane(shape: str, z: float, size: int = 48) -> np.ndarray:
    """One HU slice of a simple phantom that changes along z (z in [0, 1])."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    hu = np.full((size, size), -1000.0)
    hu[x**2 + y**2 < 0.85**2] = 0.0
    if shape == "disk":
        hu[x**2 + y**2 < (0.2 + 0.5 * z) ** 2] = 700.0
    elif shape == "bar":
        hu[(np.abs(x - 0.6 * z + 0.3) < 0.15) & (np.abs(y) < 0.6)] = 700.0
    else:
        r = np.sqrt(x**2 + y**2)
        hu[(r > 0.3 + 0.3 * z) & (r < 0.45 + 0.3 * z)] = -700.0
    return hu


def _write_series(folder: Path, study: str, series: str, patient: str, slices: int, shape: str) -> list[str]:
    """A CT series with geometry and rescale, one file per slice, in shuffled file order: its SOP UIDs by z."""
    uids = [generate_uid() for _ in range(slices)]
    order = np.random.default_rng(slices).permutation(slices)
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uids[i]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uids[i]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.Modality, ds.BodyPartExamined, ds.StudyDate = patient, "CT", "CHEST", "20240102"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-19.2, -19.2, float(i * 5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 5.0
        plane = _plane(shape, i / max(1, slices - 1))
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
        ds.PixelData = np.clip(plane + 1024.0, 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{series[-6:]}-{order[i]:03d}.dcm", enforce_file_format=True)
    return uids


@pytest.fixture(scope="module")
def cases(chromium: Path, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[dict[str, Any]]:
    """Three studies of four CT series, indexed, and a server over them."""
    root = tmp_path_factory.mktemp("cases")
    folder = root / "in"
    folder.mkdir()
    studies = {name: generate_uid() for name in "ABC"}
    series_uids: dict[str, str] = {}
    sops: dict[str, list[str]] = {}
    for name, (study, patient, slices, shape) in SERIES.items():
        series_uids[name] = generate_uid()
        sops[name] = _write_series(folder, studies[study], series_uids[name], patient, slices, shape)
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        summary = run_index(collection, [folder])
    finally:
        collection.close()
    assert summary.indexed == sum(n for _, _, n, _ in SERIES.values()) and summary.failed == 0, summary
    with serve_samples(root / "data", tiny_model) as base:
        yield {"base": base, "studies": studies, "series": series_uids, "sops": sops}


def _search_text(page: Page, level: str) -> None:
    page.check(f"[data-testid=level-{level}]")
    seq = page.get_attribute("#results", "data-seq")
    page.fill("#text-input", "a round bright lesion")
    page.press("#text-input", "Enter")
    wait_for_new_results(page, seq)


def _card(page: Page, series_uid: str) -> Any:
    return page.locator(f"#results .card[data-uid='{series_uid}']")


def test_the_image_by_sop_route(cases: dict[str, Any]) -> None:
    sop = cases["sops"]["A1"][2]
    with httpx.Client(base_url=cases["base"], timeout=60) as client:
        found = client.get("/v1/images/by-sop", params={"uid": sop, "frame": 1})
        assert found.status_code == 200 and found.json()["sop_instance_uid"] == sop
        assert found.json()["series_instance_uid"] == cases["series"]["A1"]
        frame = client.get("/v1/images/by-sop", params={"uid": sop, "frame": 2})
        assert frame.status_code == 404 and "frame 2 of SOP Instance UID" in frame.json()["message"]
        assert "indexed frames: 1" in frame.json()["message"]
        unknown = client.get("/v1/images/by-sop", params={"uid": "1.2.3.4"})
        assert unknown.status_code == 404 and "1.2.3.4 is not indexed here" in unknown.json()["message"]


def test_series_cards_show_a_strip_and_the_detail_steps_through_the_slices(cases: dict[str, Any], page: Page) -> None:
    open_page(page, cases["base"])
    _search_text(page, "series")
    cards = page.locator("#results .card")
    assert cards.count() == 4
    assert {cards.nth(i).get_attribute("data-level") for i in range(4)} == {"series"}
    assert "of 4 series" in page.inner_text("#results-total")
    b1 = _card(page, cases["series"]["B1"])
    assert b1.locator("[data-testid=strip] img").count() == 8  # all 8 slices (the strip shows up to 8)
    assert "8 of 8 slices" in b1.locator("[data-testid=slices]").inner_text()
    page.wait_for_function(  # the strip's thumbnails are real renders of the slices
        "uid => [...document.querySelectorAll(`.card[data-uid='${uid}'] .strip img`)]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        arg=cases["series"]["B1"],
    )
    b1.click()
    page.wait_for_selector("#detail:not([hidden])")
    assert page.is_visible("[data-testid=slice-stepper]")
    ids = [int(i) for i in (b1.get_attribute("data-slices") or "").split(",")]
    assert len(ids) == 8
    start = int(page.get_attribute("#detail", "data-slice") or 0)
    assert start in ids
    position = ids.index(start)
    step = 1 if position < len(ids) - 1 else -1
    page.keyboard.press("1")  # the viewer's first CT preset (lung): the next slice keeps the reader's window
    page.wait_for_function("() => document.getElementById('viewer-stage').dataset.ww === '1500'")
    page.keyboard.press("ArrowRight" if step == 1 else "ArrowLeft")
    page.wait_for_function(
        "id => document.getElementById('detail').dataset.slice === id", arg=str(ids[position + step])
    )
    page.wait_for_function(  # the next slice is on screen
        "id => { const s = document.getElementById('viewer-stage'); return s.dataset.image === id"
        " && s.dataset.state === 'ready'; }",
        arg=str(ids[position + step]),
    )
    assert page.get_attribute("#viewer-stage", "data-ww") == "1500"
    assert page.get_attribute("#viewer-stage", "data-wc") == "-600"
    assert page.inner_text("[data-testid=slice-pos]").startswith(f"slice {position + step + 1} of 8")
    page.wait_for_function(
        "() => { const i = document.getElementById('detail-preview'); return i.complete && i.naturalWidth > 0; }"
    )
    page.keyboard.press("ArrowLeft" if step == 1 else "ArrowRight")
    page.wait_for_function("id => document.getElementById('detail').dataset.slice === id", arg=str(start))
    save_shot(page, "series-detail.png")
    page.keyboard.press("Escape")
    _search_text(page, "study")
    assert page.locator("#results .card[data-level=study]").count() == 3
    assert "of 3 studies" in page.inner_text("#results-total")


def test_compare_scrolls_two_series_in_step(cases: dict[str, Any], page: Page) -> None:
    open_page(page, cases["base"])
    _search_text(page, "series")
    _card(page, cases["series"]["A1"]).click()
    page.wait_for_selector("#detail:not([hidden])")
    seq = page.get_attribute("#results", "data-seq")
    page.click("[data-testid=find-similar]")
    wait_for_new_results(page, seq)
    assert page.get_attribute("[data-testid=query-summary]", "data-case") == cases["series"]["A1"]
    assert _card(page, cases["series"]["A1"]).count() == 0  # the query case is never its own hit
    _card(page, cases["series"]["B1"]).click()
    page.wait_for_selector("#detail:not([hidden])")
    page.click("[data-testid=compare-open]")
    page.wait_for_selector("#compare[data-state=ready]")
    assert page.is_visible("[data-testid=compare-stepper]")
    for _ in range(8):  # to the first slice of both
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.getElementById('compare').dataset.position === '0.0000'")
    assert page.inner_text("[data-testid=compare-pos]") == "query slice 1 of 6 · hit slice 1 of 8"
    seen = []
    for _ in range(7):  # one step of the longer series each time; the shorter one follows by relative position
        page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.getElementById('compare').dataset.state === 'ready'")
        seen.append(page.inner_text("[data-testid=compare-pos]"))
    expected = [f"query slice {round(k / 7 * 5) + 1} of 6 · hit slice {k + 1} of 8" for k in range(1, 8)]
    assert seen == expected
    page.wait_for_function(
        "() => ['compare-query-img', 'compare-hit-img'].every(id => { const i = document.getElementById(id);"
        " return i.complete && i.naturalWidth > 0; })"
    )
    save_shot(page, "series-compare.png")


def test_deep_links_open_the_page_with_a_case(cases: dict[str, Any], page: Page) -> None:
    base = cases["base"]
    page.goto(f"{base}/?series={cases['series']['B2']}")
    page.wait_for_selector("body[data-deeplink=done]")
    wait_for_new_results(page, "0")
    assert page.is_checked("[data-testid=level-series]")
    assert page.get_attribute("[data-testid=query-summary]", "data-case") == cases["series"]["B2"]
    assert page.locator("#results .card[data-level=series]").count() == 3  # the other three series
    page.goto(f"{base}/?study={cases['studies']['A']}")
    page.wait_for_selector("body[data-deeplink=done]")
    wait_for_new_results(page, "0")
    assert page.is_checked("[data-testid=level-study]")
    assert page.locator("#results .card[data-level=study]").count() == 2
    sop = cases["sops"]["C1"][1]
    page.goto(f"{base}/?sop={sop}&frame=1")
    page.wait_for_selector("body[data-deeplink=done]")
    wait_for_new_results(page, "0")
    assert page.get_attribute("[data-testid=query-summary]", "data-kind") == "similar"
    pivot = page.get_attribute("[data-testid=query-summary]", "data-pivot")
    assert pivot and pivot not in [c.get_attribute("data-id") for c in page.locator("#results .card").all()]
    page.goto(f"{base}/?sop=1.2.3.4")
    page.wait_for_selector("body[data-deeplink=done]")
    assert page.is_visible("[data-testid=error]")
    assert "SOP Instance UID 1.2.3.4 is not indexed here" in page.inner_text("[data-testid=error]")
    page.goto(f"{base}/?study=1.2.3.5")
    page.wait_for_selector("body[data-deeplink=done]")
    page.wait_for_selector("[data-testid=error]:not([hidden])")
    assert "1.2.3.5" in page.inner_text("[data-testid=error]")
