"""The render route and window presets over HTTP: query previews as indexed, CT presets with known numbers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from pydicom.pixels.processing import apply_modality_lut

from api.config import hash_key
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.imaging.windowing import CT_PRESETS, preset_range
from retrieval.labels import load_labels
from tests.conftest import SAMPLES, make_settings
from tests.service import (
    KEY,
    KEY_ID,
    MAX_UPLOAD,
    PNG_MAGIC,
    Server,
    is_ready,
    make_client,
    running_server,
    service_env,
)

pytestmark = pytest.mark.e2e  # drives a live `medsearch serve` (not in `make test-fast`)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    """data/samples indexed with labels, served with an API key."""
    root = tmp_path_factory.mktemp("render")
    data_dir = root / "data"
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        summary = run_index(collection, [SAMPLES], IndexOptions(workers=0, labels=load_labels(SAMPLES / "labels.csv")))
    finally:
        collection.close()
    assert summary.indexed == 10 and summary.failed == 0
    env = service_env(data_dir, tiny_model, MEDSEARCH_API_KEYS=f"{KEY_ID}:{hash_key(KEY)}")
    with running_server(env, root / "logs", is_ready) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with make_client(server.url, KEY) as c:
        yield c


@pytest.fixture(scope="module")
def ids(client: httpx.Client) -> dict[str, int]:
    hits = client.post("/v1/search/text", json={"text": "any", "k": 100}).json()["hits"]
    return {Path(h["source"]).name: h["id"] for h in hits}


def render(client: httpx.Client, name: str, data: bytes | None = None, **form: str) -> httpx.Response:
    content = data if data is not None else (SAMPLES / name).read_bytes()
    return client.post("/v1/render", files={"file": (name, content, "application/octet-stream")}, data=form)


def pixels(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.content.startswith(PNG_MAGIC)
    return np.asarray(PILImage.open(io.BytesIO(response.content)).convert("L"), dtype=np.int16)


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and all(w in body["message"] for w in words), body


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "693_J2KI.dcm", "RG1_J2KI.dcm", "emri_small.dcm", "examples_palette.dcm"]
)
def test_upload_renders_like_the_indexed_preview(client: httpx.Client, ids: dict[str, int], name: str) -> None:
    """The query preview is the indexer's picture: same frame, same window, same pixels as the hit's preview."""
    uploaded = render(client, name)
    meta = client.get(f"/v1/images/{ids[name]}").json()
    assert uploaded.headers["x-medsearch-kind"] == "dicom"
    assert uploaded.headers["x-medsearch-modality"] == (meta["modality"] or "")
    assert uploaded.headers["x-medsearch-window"] == meta["window"]
    # the source frame's size and number: the page maps a region drawn on the (scaled) picture back to them
    assert uploaded.headers["x-medsearch-size"] == f"{meta['columns']}x{meta['rows']}"
    assert uploaded.headers["x-medsearch-frame"] == str(meta["frame"])
    assert uploaded.headers["x-medsearch-frames"] == str(meta["number_of_frames"])
    indexed = pixels(client.get(f"/v1/images/{ids[name]}/preview"))
    assert np.array_equal(pixels(uploaded), indexed)
    small = render(client, name, size="thumbnail")
    thumb = pixels(small)
    assert max(thumb.shape) <= 256 and small.headers["x-medsearch-size"] == uploaded.headers["x-medsearch-size"]


def test_ct_presets_apply_known_numbers(client: httpx.Client, ids: dict[str, int]) -> None:
    """Each preset is DICOM's linear window (PS3.3 C.11.2.1.2.1) on the file's HU: every pixel follows from it."""
    ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert preset_range("lung") == (-1350.0, 150.0)
    pictures = {}
    for name in ("lung", "soft-tissue", "bone", "brain"):
        width, centre = CT_PRESETS[name]
        expected = np.rint(np.clip((hu - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)
        got = pixels(render(client, "CT_small.dcm", window=name))
        assert np.abs(got - expected).max() <= 1, name
        preview = pixels(client.get(f"/v1/images/{ids['CT_small.dcm']}/preview", params={"window": name}))
        assert np.array_equal(preview, got), name
        pictures[name] = got
    assert len({p.tobytes() for p in pictures.values()}) == 4  # each preset shows a different picture
    # a file with its own window (40/100): a preset sets it aside, the default keeps it
    own = pixels(render(client, "693_J2KI.dcm"))
    lung = pixels(render(client, "693_J2KI.dcm", window="lung"))
    assert render(client, "693_J2KI.dcm", window="lung").headers["x-medsearch-window"] == "ct:lung"
    assert own.shape == lung.shape and np.abs(own - lung).mean() > 10


def test_window_list(client: httpx.Client) -> None:
    body = client.get("/v1/render/windows").json()
    assert body["modality"] == "CT"
    by_name = {p["name"]: p for p in body["presets"]}
    assert {"lung", "soft-tissue", "bone", "brain"} <= set(by_name) and set(by_name) == set(CT_PRESETS)
    assert (by_name["brain"]["width"], by_name["brain"]["centre"]) == (80.0, 40.0)
    assert (by_name["brain"]["low"], by_name["brain"]["high"]) == (0.0, 80.0)


def test_bad_input_is_a_clear_error(client: httpx.Client, ids: dict[str, int], server: Server) -> None:
    assert_error(render(client, "CT_small.dcm", window="liver"), 400, "bad_query", "unknown window", "lung")
    assert_error(render(client, "MR_small.dcm", window="lung"), 409, "window_not_applicable", "CT images only", "MR")
    png = io.BytesIO()
    PILImage.new("L", (8, 8)).save(png, format="PNG")
    assert_error(render(client, "x.png", png.getvalue(), window="bone"), 409, "window_not_applicable", "CT DICOM")
    assert pixels(render(client, "x.png", png.getvalue())).shape == (8, 8)  # without a window a PNG renders
    assert_error(render(client, "notes.txt", b"not an image at all"), 415, "unsupported_format")
    assert_error(render(client, "empty.dcm", b""), 422, "validation_error", "empty")  # the schema: minLength 1
    assert_error(render(client, "CT_small.dcm", size="huge"), 422, "validation_error", "size")
    assert_error(client.post("/v1/render", data={"window": "lung"}), 422, "validation_error", "file")
    assert_error(render(client, "big.dcm", b"\0" * (MAX_UPLOAD + 1)), 413, "too_large")
    mr = ids["MR_small.dcm"]
    assert_error(
        client.get(f"/v1/images/{mr}/preview", params={"window": "lung"}),
        409,
        "window_not_applicable",
        "CT images only",
    )
    assert_error(client.get("/v1/images/999999/preview", params={"window": "lung"}), 404, "not_found")
    ct = ids["CT_small.dcm"]
    assert_error(client.get(f"/v1/images/{ct}/preview", params={"window": "x"}), 400, "bad_query", "unknown window")
    with make_client(server.url) as anon:
        assert_error(render(anon, "CT_small.dcm"), 401, "unauthorized")
        assert_error(anon.get("/v1/render/windows"), 401, "unauthorized")
        assert_error(anon.get(f"/v1/images/{ct}/preview", params={"window": "lung"}), 401, "unauthorized")
    assert "Traceback" not in server.stderr()


def test_search_total_and_readable_metadata(client: httpx.Client, ids: dict[str, int]) -> None:
    everything = client.post("/v1/search/text", json={"text": "any", "k": 3}).json()
    assert everything["total"] == 10 and len(everything["hits"]) == 3
    ct = client.post("/v1/search/text", json={"text": "any", "k": 1, "modality": ["CT"]}).json()
    assert ct["total"] == 2  # CT_small and 693_J2KI
    meta = client.get(f"/v1/images/{ids['693_J2KI.dcm']}").json()
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert meta["transfer_syntax_title"] == "JPEG 2000 Image Compression"
