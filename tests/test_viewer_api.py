"""The viewer route: free window/level from the source (DICOM's linear VOI on HU or stored values), invert, frames."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydicom.pixels.processing import apply_modality_lut

from api.app import create_app
from api.config import ServiceSettings
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from tests.conftest import SAMPLES, make_settings

pytestmark = pytest.mark.slow  # indexes a small collection
FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "examples_palette.dcm"]


def linear_voi(values: np.ndarray[Any, Any], centre: float, width: float) -> np.ndarray[Any, Any]:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255, written out here rather than taken from the code under test."""
    return np.rint(np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)


@pytest.fixture(scope="module")
def api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("viewer")
    folder = root / "images"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    PILImage.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(folder / "p.png")
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        assert run_index(collection, [folder], IndexOptions()).indexed == len(FILES) + 1
    finally:
        collection.close()
    settings = ServiceSettings(data_dir=root / "data", model=str(tiny_model), workers=0)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def ids(api: TestClient) -> dict[str, int]:
    hits = api.post("/v1/search/text", json={"text": "any", "k": 100}).json()["hits"]
    return {Path(h["source"]).name: h["id"] for h in hits}


def pixels(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    return np.asarray(PILImage.open(io.BytesIO(response.content)).convert("L"), dtype=np.float64)


def hu(name: str, frame: int = 0) -> np.ndarray[Any, Any]:
    ds = pydicom.dcmread(SAMPLES / name)
    arr = ds.pixel_array if int(ds.get("NumberOfFrames") or 1) == 1 else ds.pixel_array[frame]
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def test_default_window_is_named_and_every_pixel_follows_the_formula(api: TestClient, ids: dict[str, int]) -> None:
    ct = api.get(f"/v1/images/{ids['CT_small.dcm']}/view")
    assert ct.headers["x-medsearch-window-origin"] == "ct:soft-tissue"
    assert (ct.headers["x-medsearch-window-centre"], ct.headers["x-medsearch-window-width"]) == ("40", "400")
    assert ct.headers["x-medsearch-window-units"] == "HU" and ct.headers["x-medsearch-size"] == "128x128"
    assert np.abs(pixels(ct) - linear_voi(hu("CT_small.dcm"), 40, 400)).max() <= 1
    mr = api.get(f"/v1/images/{ids['MR_small.dcm']}/view")  # the file's own window, on stored values
    assert mr.headers["x-medsearch-window-origin"] == "file" and mr.headers["x-medsearch-window-units"] == "stored"
    assert (mr.headers["x-medsearch-window-centre"], mr.headers["x-medsearch-window-width"]) == ("600", "1600")
    assert np.abs(pixels(mr) - linear_voi(hu("MR_small.dcm"), 600, 1600)).max() <= 1


def test_free_window_and_invert(api: TestClient, ids: dict[str, int]) -> None:
    url = f"/v1/images/{ids['CT_small.dcm']}/view"
    free = api.get(url, params={"wc": -300, "ww": 1234.5})
    assert free.headers["x-medsearch-window-origin"] == "request"
    expected = linear_voi(hu("CT_small.dcm"), -300, 1234.5)
    assert np.abs(pixels(free) - expected).max() <= 1
    assert np.abs(pixels(free) - pixels(api.get(url))).mean() > 5  # another window, another picture
    inverted = api.get(url, params={"wc": -300, "ww": 1234.5, "invert": "true"})
    assert inverted.headers["x-medsearch-inverted"] == "true"
    assert np.abs(pixels(inverted) - (255 - expected)).max() <= 1
    only_centre = api.get(url, params={"wc": 100})  # the width stays the default's
    assert only_centre.headers["x-medsearch-window-width"] == "400"
    assert np.abs(pixels(only_centre) - linear_voi(hu("CT_small.dcm"), 100, 400)).max() <= 1


def test_frames_of_a_multiframe_file(api: TestClient, ids: dict[str, int]) -> None:
    url = f"/v1/images/{ids['emri_small.dcm']}/view"
    own = api.get(url)
    assert own.headers["x-medsearch-frames"] == "10" and own.headers["x-medsearch-frame"] == "6"  # indexed: middle
    for frame in (1, 3, 10):
        shown = api.get(url, params={"frame": frame})
        centre, width = (float(shown.headers[f"x-medsearch-window-{k}"]) for k in ("centre", "width"))
        assert shown.headers["x-medsearch-window-origin"] == "range"  # no file window on this MR: its value range
        expected = linear_voi(hu("emri_small.dcm", frame - 1), centre, width)
        assert expected.min() == 0 and expected.max() == 255
        assert np.abs(pixels(shown) - expected).max() <= 1, frame
    assert not np.array_equal(pixels(api.get(url, params={"frame": 1})), pixels(api.get(url, params={"frame": 10})))


def test_bad_input_names_the_problem(api: TestClient, ids: dict[str, int]) -> None:
    ct = f"/v1/images/{ids['CT_small.dcm']}/view"
    for params, word in (({"ww": 0}, "ww"), ({"wc": 1e9}, "wc"), ({"ww": "wide"}, "ww"), ({"frame": 0}, "frame")):
        answer = api.get(ct, params=params)
        assert answer.status_code == 422 and word in answer.text, (params, answer.text)
    beyond = api.get(f"/v1/images/{ids['emri_small.dcm']}/view", params={"frame": 11})
    assert beyond.status_code == 400 and "frame 11 does not exist" in beyond.json()["message"]
    for name, what in (("examples_palette.dcm", "PALETTE COLOR"), ("p.png", "PNG/JPEG/TIFF")):
        refused = api.get(f"/v1/images/{ids[name]}/view", params={"wc": 10, "ww": 20})
        assert refused.status_code == 409 and refused.json()["code"] == "window_not_applicable", refused.text
        assert what in refused.json()["message"]
    png = f"/v1/images/{ids['p.png']}/view"  # without a window a picture is shown, and inverted when asked
    assert "x-medsearch-window-centre" not in api.get(png).headers
    assert np.array_equal(pixels(api.get(png, params={"invert": "true"})), 255 - pixels(api.get(png)))
    assert api.get("/v1/images/999999/view").status_code == 404
