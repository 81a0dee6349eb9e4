"""Region-of-interest queries: crop after windowing, before preprocessing; API (upload, by id), CLI, bad regions."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from api.app import create_app
from api.config import ServiceSettings
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.errors import BadQueryError
from retrieval.imaging.roi import crop, parse_roi
from retrieval.prepare import prepare_bytes
from tests.commands import run
from tests.conftest import make_settings, testdata_file

FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "SC_rgb_rle.dcm"]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _pattern() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(64, 96), dtype=np.uint8)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1,2,3", "not x,y,w,h"),
        ("a,b,c,d", "not x,y,w,h"),
        ("-1,0,10,10", "not x,y,w,h"),
        ("0,0,0,10", "empty"),
        ("0,0,4,40", "too small"),
        ("96,0,10,10", "starts outside the 96x64 image"),
        ("90,0,10,10", "reaches outside the 96x64 image"),
        ("0,60,10,10", "reaches outside the 96x64 image"),
    ],
)
def test_bad_regions_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(BadQueryError, match=problem):
        crop(_pattern().astype(np.float32), parse_roi(text))


def test_a_region_is_preprocessed_exactly_like_a_whole_image_of_its_pixels(tiny_model: Path, tmp_path: Path) -> None:
    """Cropped after windowing (8-bit: /255), then square-padded and resized as any image: the same encoder input
    as a file that holds only the region's pixels."""
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    try:
        processor = collection.load_encoder().image_processor
        whole = _pattern()
        region = prepare_bytes(_png(whole), processor, roi=(8, 16, 40, 24)).pixel_values
        alone = prepare_bytes(_png(whole[16:40, 8:48].copy()), processor).pixel_values
        full = prepare_bytes(_png(whole), processor).pixel_values
    finally:
        collection.close()
    np.testing.assert_array_equal(region, alone)
    assert not np.array_equal(region, full)


@pytest.fixture(scope="module")
def api(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("roi")
    folder = root / "images"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes(testdata_file(name).read_bytes())
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        assert run_index(collection, [folder], IndexOptions()).indexed == len(FILES)
    finally:
        collection.close()
    settings = ServiceSettings(data_dir=root / "data", model=str(tiny_model), workers=0)
    with TestClient(create_app(settings)) as client:
        yield client


def _search(api: TestClient, name: str, **form: str) -> dict[str, object]:
    data = testdata_file(name).read_bytes()
    answer = api.post("/v1/search/image", files={"file": (name, data)}, data={"k": "10", **form})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _scores(result: dict[str, object]) -> dict[int, float]:
    return {h["id"]: h["score"] for h in result["hits"]}  # type: ignore[attr-defined, index]


def test_upload_region_query_is_recorded_and_differs_from_the_whole_image(api: TestClient) -> None:
    whole = _search(api, "CT_small.dcm")
    region = _search(api, "CT_small.dcm", roi="16,16,64,48")
    assert whole["roi"] is None and region["roi"] == [16, 16, 64, 48]
    self_id = whole["hits"][0]["id"]  # type: ignore[index]
    assert whole["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)  # type: ignore[index]
    assert _scores(region)[self_id] < 0.999  # a part of the image is not the image
    bad = api.post(
        "/v1/search/image",
        files={"file": ("q.dcm", testdata_file("CT_small.dcm").read_bytes())},
        data={"roi": "100,100,64,64"},
    )  # CT_small is 128x128
    assert (bad.status_code, bad.json()["code"]) == (400, "region_outside")
    assert "reaches outside the 128x128 image" in bad.json()["message"]
    malformed = api.post(
        "/v1/search/image", files={"file": ("q.dcm", testdata_file("CT_small.dcm").read_bytes())}, data={"roi": "1,2,3"}
    )
    assert (malformed.status_code, malformed.json()["code"]) == (422, "validation_error")


def test_region_of_an_indexed_image_and_of_a_chosen_frame(api: TestClient) -> None:
    whole = _search(api, "CT_small.dcm")
    self_id = whole["hits"][0]["id"]  # type: ignore[index]
    similar = api.get(f"/v1/images/{self_id}/similar", params={"roi": "16,16,64,48", "k": 10}).json()
    assert similar["roi"] == [16, 16, 64, 48] and similar["query"] == "id"
    assert self_id not in _scores(similar)  # never the image itself
    upload = _search(api, "CT_small.dcm", roi="16,16,64,48")
    others = {i: s for i, s in _scores(upload).items() if i != self_id}
    assert _scores(similar) == pytest.approx(others)  # the same region, from the source or from an upload
    tiny = api.get(f"/v1/images/{self_id}/similar", params={"roi": "0,0,4,4"})
    assert tiny.status_code == 400 and "roi" in tiny.json()["message"]  # a query parameter against the schema

    third = _search(api, "emri_small.dcm", roi="8,8,48,48", frame="3")  # 10 frames of 64x64
    eighth = _search(api, "emri_small.dcm", roi="8,8,48,48", frame="8")
    assert _scores(third) != pytest.approx(_scores(eighth))
    beyond = api.post(
        "/v1/search/image",
        files={"file": ("q.dcm", testdata_file("emri_small.dcm").read_bytes())},
        data={"roi": "8,8,48,48", "frame": "11"},
    )
    assert 400 <= beyond.status_code < 500 and "frame" in beyond.json()["message"].lower(), beyond.text


def test_a_region_of_another_frame_of_an_indexed_multi_frame_image(api: TestClient) -> None:
    """By id, `frame` picks the frame a viewer shows (the indexed one is the middle): the same region and frame as
    an upload gives the same scores; a frame the file lacks, or a frame without a region, is a clear 4xx."""
    indexed = _search(api, "emri_small.dcm")["hits"][0]  # type: ignore[index]
    assert indexed["source"].endswith("emri_small.dcm")
    image_id = indexed["id"]

    def by_id(**params: object) -> dict[int, float]:
        answer = api.get(f"/v1/images/{image_id}/similar", params={"k": 10, "roi": "8,8,48,48", **params})
        assert answer.status_code == 200, answer.text
        return _scores(answer.json())

    third, eighth, own = by_id(frame=3), by_id(frame=8), by_id()
    assert third != pytest.approx(eighth) and third != pytest.approx(own)
    upload = _scores(_search(api, "emri_small.dcm", roi="8,8,48,48", frame="3"))
    assert third == pytest.approx({i: s for i, s in upload.items() if i != image_id})
    beyond = api.get(f"/v1/images/{image_id}/similar", params={"roi": "8,8,48,48", "frame": 11})
    assert 400 <= beyond.status_code < 500 and "frame" in beyond.json()["message"].lower(), beyond.text
    alone = api.get(f"/v1/images/{image_id}/similar", params={"frame": 3})
    assert (alone.status_code, alone.json()["code"]) == (400, "bad_query") and "roi" in alone.json()["message"]


@pytest.mark.parametrize(
    ("roi", "status", "code", "problem"),
    [
        ("0,0,0,9", 400, "bad_query", "is empty"),
        ("0,0,4,40", 400, "bad_query", "too small: width and height must be at least 8"),
        ("128,0,16,16", 400, "region_outside", "starts outside the 128x128 image"),
        ("100,100,64,64", 400, "region_outside", "reaches outside the 128x128 image"),
    ],
)
def test_bad_regions_are_a_400_naming_the_problem_by_upload_and_by_id(
    api: TestClient, roi: str, status: int, code: str, problem: str
) -> None:
    """Issue 20: a region outside the image, empty or tiny is a 400 whose message says which (CT_small: 128x128)."""
    ct = testdata_file("CT_small.dcm").read_bytes()
    self_id = _search(api, "CT_small.dcm")["hits"][0]["id"]  # type: ignore[index]
    for answer in (
        api.post("/v1/search/image", files={"file": ("q.dcm", ct)}, data={"roi": roi}),
        api.get(f"/v1/images/{self_id}/similar", params={"roi": roi}),
    ):
        body = answer.json()
        assert (answer.status_code, body["code"]) == (status, code), answer.text
        assert problem in body["message"] and "Traceback" not in answer.text


@pytest.mark.e2e
def test_cli_roi(cli_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in FILES:
        (folder / name).write_bytes(testdata_file(name).read_bytes())
    run(["index", "-q", str(folder)], cli_env)
    query = str(folder / "CT_small.dcm")
    report = json.loads(run(["search", "--image", query, "--roi", "16,16,64,48", "--json"], cli_env).stdout)
    assert report["roi"] == [16, 16, 64, 48] and report["hits"][0]["score"] < 0.999
    bad = run(["search", "--image", query, "--roi", "0,0,0,9"], cli_env, check=False)
    assert bad.returncode != 0 and "empty" in bad.stderr and "Traceback" not in bad.stderr
