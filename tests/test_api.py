"""The query service as deployed: real `medsearch serve` processes on loopback, driven over HTTP with httpx."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image as PILImage

from api.config import hash_key
from tests.conftest import SAMPLES, testdata_file
from tests.service import (
    KEY,
    KEY_ID,
    MAX_UPLOAD,
    N_IMAGES,
    OTHER_KEY,
    PNG_MAGIC,
    SAMPLE_NAMES,
    VIEWER,
    Server,
    assert_healthy,
    cli,
    free_port,
    hit_ids,
    is_ready,
    make_client,
    running_server,
    search_image,
    service_env,
)

pytestmark = pytest.mark.e2e  # drives live `medsearch serve` processes (not in `make test-fast`)

FRESH_NAMES = ["color-pl.dcm", "image_dfl.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]  # unlike any indexed
CLI_NAMES = ["CT_small.dcm", "emri_small.dcm", "RG1_J2KI.dcm"]
V1_ROUTES = {
    ("POST", "/v1/search/image"),
    ("POST", "/v1/search/text"),
    ("POST", "/v1/search/feedback"),
    ("POST", "/v1/export/sr"),
    ("POST", "/v1/images/{image_id}/export/sr"),
    ("GET", "/v1/images/{image_id}"),
    ("GET", "/v1/images/{image_id}/similar"),
    ("GET", "/v1/images/by-sop"),
    ("GET", "/v1/series/{uid}/similar"),
    ("GET", "/v1/studies/{uid}/similar"),
    ("GET", "/v1/studies/{uid}/reports"),
    ("POST", "/v1/search/case"),
    ("GET", "/v1/images/{image_id}/thumbnail"),
    ("GET", "/v1/images/{image_id}/preview"),
    ("GET", "/v1/images/{image_id}/view"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/summaries/status"),
    ("POST", "/v1/summaries"),
    ("POST", "/v1/summaries/stream"),
    ("POST", "/v1/render"),
    ("GET", "/v1/render/windows"),
    ("GET", "/v1/tags"),
    ("POST", "/v1/tags/apply"),
    ("DELETE", "/v1/tags/{name}"),
    ("GET", "/v1/probes"),
    ("POST", "/v1/probes/train"),
    ("POST", "/v1/probes/{name}/apply"),
    ("GET", "/v1/probes/{name}/rank"),
    ("DELETE", "/v1/probes/{name}"),
}
PUBLIC_V1_ROUTES = {("GET", "/v1/vocabulary")}  # no API key, no data


# -- routes ------------------------------------------------------------------------------------------


def test_system_routes(client: httpx.Client, tiny_model: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["model_loaded"] is True and body["index_loaded"] is True
    assert body["vectors"] == N_IMAGES and body["model"] == tiny_model.name and body["standin_model"] is True
    assert str(tiny_model.parent) not in ready.text  # public: the folder's name, never the server's path
    assert "read back" in body["encoder_runs"] and body["encoder_warning"] is None, body  # what runs, not assumed

    stats = client.get("/v1/stats").json()
    assert stats["encoder_runs"] == body["encoder_runs"] and stats["encoder"] == body["encoder"]
    assert stats["images"] == stats["vectors"] == stats["index_vectors"] == N_IMAGES
    assert stats["by_modality"]["CR"] == 2 and stats["by_modality"]["RTDOSE"] == 1 and stats["by_modality"]["CT"] == 4
    assert stats["failures"] == 0 and stats["model"] == str(tiny_model)
    vocabulary = client.get("/v1/vocabulary").json()
    assert list(stats) == vocabulary["stats"] and stats["index"]["params"]["type"] == "flat"
    assert stats["model_fingerprint"] and stats["standin_model"] is True

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower() or "<!doctype html" in page.text.lower()

    spec = client.get("/openapi.json").json()
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() if p.startswith("/v1") for m in ops}
    assert listed == V1_ROUTES | PUBLIC_V1_ROUTES


def test_every_sample_finds_itself(client: httpx.Client, ids: dict[str, int]) -> None:
    for name in SAMPLE_NAMES:
        response = search_image(client, (SAMPLES / name).read_bytes(), name, k=5)
        assert response.status_code == 200, response.text
        body = response.json()
        top = body["hits"][0]
        assert body["query"] == "image" and body["standin_model"] is True and len(body["hits"]) == 5
        assert top["id"] == ids[name] and Path(top["source"]).name == name and top["score"] > 0.999, (name, top)
        assert top["rank"] == 1 and top["thumbnail_url"] == f"/v1/images/{top['id']}/thumbnail"
        assert top["viewer_url"] == VIEWER.format(study_instance_uid=top["study_instance_uid"])
        assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)


def test_cli_and_api_agree(client: httpx.Client, main_server: Server) -> None:
    def run_cli(name: str) -> dict[str, Any]:
        proc = cli(["search", "--image", str(SAMPLES / name), "--json", "-k", "5"], main_server.env)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    # each CLI run pays ~6 s of imports and model loading: a CT, a multi-frame MR and a JPEG 2000 radiograph
    by_cli = {name: run_cli(name) for name in CLI_NAMES}
    for name in CLI_NAMES:
        api_hits = search_image(client, (SAMPLES / name).read_bytes(), name, k="5").json()["hits"]
        cli_hits = by_cli[name]["hits"]
        assert [h["id"] for h in api_hits] == [h["id"] for h in cli_hits], name
        for a, c in zip(api_hits, cli_hits, strict=True):
            assert abs(a["score"] - c["score"]) <= 1e-5, (name, a["score"], c["score"])


def test_image_search_options(client: httpx.Client, ids: dict[str, int], everything: list[dict[str, Any]]) -> None:
    ct = (SAMPLES / "CT_small.dcm").read_bytes()
    with_text = search_image(client, ct, text="head CT", text_weight=0.3, k=5)
    assert with_text.status_code == 200 and with_text.json()["query"] == "image+text"
    assert hit_ids(with_text)[0] == ids["CT_small.dcm"]  # mostly image: the exact image still wins
    assert hit_ids(search_image(client, ct, text="head CT", text_weight=0.0, k=5)) == hit_ids(
        search_image(client, ct, k=5)
    )
    text_only = search_image(client, ct, text="head CT", text_weight=1.0, k=5).json()["hits"]
    as_text = client.post("/v1/search/text", json={"text": "head CT", "k": 5}).json()["hits"]
    assert [h["id"] for h in text_only] == [h["id"] for h in as_text]

    by_modality = {h["modality"] for h in everything}
    mr = search_image(client, ct, modality="MR", k=20).json()["hits"]
    assert len(mr) == sum(1 for h in everything if h["modality"] == "MR") and {h["modality"] for h in mr} == {"MR"}
    two = search_image(client, ct, modality=["cr", "US"], k=50).json()["hits"]
    assert {h["modality"] for h in two} == {"CR", "US"} and {"CR", "US"} <= by_modality
    labelled = search_image(client, ct, label="mr-head", k=50).json()["hits"]
    assert sorted(Path(h["source"]).name for h in labelled) == ["MR_small.dcm", "emri_small.dcm"]
    chest = search_image(client, ct, body_part="chest", k=50).json()["hits"]
    assert [Path(h["source"]).name for h in chest] == ["RG1_J2KI.dcm"]
    dated = search_image(client, ct, date_from="2004-01-01", date_to="2004-12-31", k=50).json()["hits"]
    assert dated and all("2004-01-01" <= h["study_date"] <= "2004-12-31" for h in dated)
    assert len(dated) == sum(1 for h in everything if h["study_date"] and h["study_date"].startswith("2004"))
    no_study = search_image(client, ct, exclude_same_study=True, k=50).json()["hits"]
    assert ids["CT_small.dcm"] not in [h["id"] for h in no_study] and len(no_study) == N_IMAGES - 1

    full = search_image(client, ct, k=8).json()["hits"]
    page = search_image(client, ct, k=3, offset=2).json()
    assert page["k"] == 3 and page["offset"] == 2
    assert [(h["id"], h["rank"]) for h in page["hits"]] == [(h["id"], h["rank"]) for h in full[2:5]]
    tail = search_image(client, ct, k=10, offset=N_IMAGES - 2).json()["hits"]
    assert len(tail) == 2

    for group in ("study", "series"):
        grouped = search_image(client, ct, k=50, group_by=group).json()["hits"]
        keys = [h[f"{group}_instance_uid"] for h in grouped]
        assert len(keys) == len(set(keys)) == N_IMAGES - 1  # the two frames of one series collapse into one hit


def test_text_search(client: httpx.Client) -> None:
    response = client.post("/v1/search/text", json={"text": "right lower lobe consolidation", "k": 6})
    body = response.json()
    assert response.status_code == 200 and body["query"] == "text" and len(body["hits"]) == 6
    for hit in body["hits"]:
        assert 0 < hit["text_score"] < 1 and -1 <= hit["score"] <= 1
    assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)
    us = client.post("/v1/search/text", json={"text": "ultrasound", "modality": ["US"], "k": 50}).json()["hits"]
    assert len(us) == 3 and {h["modality"] for h in us} == {"US"}
    one = client.post("/v1/search/text", json={"text": "ultrasound", "modality": "US", "k": 50}).json()["hits"]
    assert [h["id"] for h in one] == [h["id"] for h in us]  # a single string is a list of one
    series = client.post("/v1/search/text", json={"text": "ct", "group_by": "series", "k": 50}).json()["hits"]
    assert len(series) == N_IMAGES - 1
    page = client.post("/v1/search/text", json={"text": "right lower lobe consolidation", "k": 2, "offset": 3}).json()
    assert [h["id"] for h in page["hits"]] == [h["id"] for h in body["hits"][3:5]]


def test_image_metadata_and_similar(client: httpx.Client, ids: dict[str, int], main_data: Path) -> None:
    image = client.get(f"/v1/images/{ids['RG1_J2KI.dcm']}").json()
    assert image["id"] == ids["RG1_J2KI.dcm"] and image["modality"] == "CR" and image["label"] == "cr-chest"
    assert image["rows"] == 1955 and image["columns"] == 1841 and image["source"].endswith("RG1_J2KI.dcm")
    assert image["viewer_url"] == VIEWER.format(study_instance_uid=image["study_instance_uid"])
    assert not [k for k in image if "patient" in k.lower() or "name" in k.lower()]
    names = patient_identifiers(main_data)
    for image_id in ids.values():
        body = client.get(f"/v1/images/{image_id}").text
        assert not [n for n in names if n in body], body

    for image_id in ids.values():
        hits = hit_ids(client.get(f"/v1/images/{image_id}/similar", params={"k": 50}))
        assert image_id not in hits and len(hits) == N_IMAGES - 1
    similar = client.get(f"/v1/images/{ids['CT_small.dcm']}/similar", params={"k": 3, "modality": "CT"}).json()
    assert similar["query"] == "id" and len(similar["hits"]) == 3 and {h["modality"] for h in similar["hits"]} == {"CT"}
    assert ids["CT_small.dcm"] not in [h["id"] for h in similar["hits"]]
    second = client.get(f"/v1/images/{ids['CT_small.dcm']}/similar", params={"k": 2, "offset": 1}).json()["hits"]
    first = client.get(f"/v1/images/{ids['CT_small.dcm']}/similar", params={"k": 3}).json()["hits"]
    assert [h["id"] for h in second] == [h["id"] for h in first[1:3]]


def test_thumbnail_and_preview(client: httpx.Client, ids: dict[str, int], main_data: Path) -> None:
    for kind, size in (("thumbnail", 256), ("preview", 1024)):
        for name in ("RG1_J2KI.dcm", "CT_small.dcm", "examples_palette.dcm"):
            image_id = ids[name]
            response = client.get(f"/v1/images/{image_id}/{kind}")
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert response.content.startswith(PNG_MAGIC)
            width, height = PILImage.open(io.BytesIO(response.content)).size
            assert max(width, height) <= size
            if name == "RG1_J2KI.dcm":
                assert max(width, height) == size  # a 1955 x 1841 radiograph is scaled down to the limit
            cached = sorted((main_data / "cache" / kind).glob(f"{image_id}-*.png"))
            assert len(cached) == 1 and cached[0].read_bytes() == response.content
            stamp = cached[0].stat().st_mtime_ns
            again = client.get(f"/v1/images/{image_id}/{kind}")
            assert again.content == response.content and cached[0].stat().st_mtime_ns == stamp  # not re-rendered


def test_metrics(client: httpx.Client, ids: dict[str, int]) -> None:
    image_id = ids["CT_small.dcm"]
    client.get(f"/v1/images/{image_id}")
    client.get(f"/v1/images/{image_id + 1000}")  # a 404 is counted under the same template
    client.get(f"/v1/images/{image_id}/similar", params={"k": 2})
    client.post("/v1/search/text", json={"text": "x", "k": 1})
    search_image(client, (SAMPLES / "MR_small.dcm").read_bytes(), k=1)
    client.get("/healthz")
    text = client.get("/metrics").text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)\{(.*)\} (\S+)", line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            samples[(match.group(1), labels)] = float(match.group(3))

    def count(route: str, method: str = "GET", status: str = "200") -> float:
        key = frozenset({("method", method), ("route", route), ("status", status)})
        return samples.get(("medsearch_requests_total", key), 0.0)

    assert count("/v1/images/{image_id}") >= 1 and count("/v1/images/{image_id}", status="404") >= 1
    assert count("/v1/images/{image_id}/similar") >= 1 and count("/v1/search/text", "POST") >= 1
    assert count("/v1/search/image", "POST") >= 1 and count("/healthz") >= 1
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not [r for r in routes if r and re.search(r"/\d+", r)], routes  # templates, never raw ids
    bucket = frozenset({("method", "POST"), ("route", "/v1/search/text"), ("le", "+Inf")})
    assert samples[("medsearch_request_seconds_bucket", bucket)] >= 1
    assert "# TYPE medsearch_request_seconds histogram" in text
    assert "# TYPE medsearch_requests_total counter" in text


# -- errors ------------------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    if code is not None:
        assert response.json()["code"] == code, response.text


def test_error_statuses(client: httpx.Client, ids: dict[str, int]) -> None:
    ct = (SAMPLES / "CT_small.dcm").read_bytes()
    # 400: requests that pass validation but the engine refuses
    assert_error(client.post("/v1/search/text", json={"text": "   \t  "}), 400, "bad_query")
    # 404: unknown ids on every id route, and unknown paths
    missing = max(ids.values()) + 1000
    for suffix in ("", "/similar", "/thumbnail", "/preview"):
        assert_error(client.get(f"/v1/images/{missing}{suffix}"), 404, "not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    # 413: declared too large (refused before reading) and just over the limit (refused by the route)
    assert_error(search_image(client, b"\0" * (MAX_UPLOAD + 1024 * 1024)), 413, "too_large")
    assert_error(search_image(client, b"\0" * (MAX_UPLOAD + 1000)), 413, "too_large")
    # 415: not an image
    assert_error(search_image(client, b"hello, this is not an image at all" * 10, "notes.txt"), 415)
    assert_error(search_image(client, b"GIF89a" + b"\0" * 200, "x.gif"), 415)
    # 422: validation
    assert_error(client.post("/v1/search/image", data={"k": "3"}), 422, "validation_error")  # no file
    for form in ({"k": "0"}, {"group_by": "patient"}, {"date_from": "yesterday"}, {"text_weight": "1.5"}):
        assert_error(search_image(client, ct, **form), 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"k": 3}), 422, "validation_error")
    not_json = client.post("/v1/search/text", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(not_json, 422, "validation_error")
    assert_error(client.post("/v1/search/text", json={"text": "x", "modality": ["X"] * 33}), 422, "validation_error")
    assert_error(client.get(f"/v1/images/{ids['CT_small.dcm']}/similar", params={"k": "ten"}), 422)
    assert_error(client.get("/v1/images/not-a-number"), 422, "validation_error")
    assert_error(client.delete("/v1/stats"), 405)
    assert_healthy(client)


def patient_identifiers(data_dir: Path) -> list[str]:
    """PatientName / PatientID values of every indexed file (long enough not to collide by chance)."""
    db = sqlite3.connect(f"file:{data_dir / 'medsearch.db'}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        column = "source_uri" if "source_uri" in {r[1] for r in db.execute("pragma table_info(images)")} else None
        assert "images" in tables and column
        sources = {r[0] for r in db.execute(f"select {column} from images")}
    finally:
        db.close()
    values: set[str] = set()
    for source in sources:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID"):
            value = str(ds.get(keyword) or "").strip("^ ")
            if len(value) >= 5 and value != "Anonymized":
                values.add(value)
    assert len(values) >= 5
    return sorted(values)


# -- hostile input ---------------------------------------------------------------------------------------


def truncated_dicom() -> bytes:
    data = (SAMPLES / "CT_small.dcm").read_bytes()
    return data[: len(data) // 2]


def truncated_header() -> bytes:
    return (SAMPLES / "CT_small.dcm").read_bytes()[:700]


def huge_header_dicom() -> bytes:
    """A small file whose header claims a 65535 x 65535 frame."""
    ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    ds.Rows = 65535
    ds.Columns = 65535
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def png_bomb() -> bytes:
    """A 20000 x 20000 single-colour PNG: tens of kilobytes on disk, 400 megapixels decoded."""
    buf = io.BytesIO()
    PILImage.new("1", (20000, 20000), 0).save(buf, format="PNG")
    assert len(buf.getvalue()) < 1024 * 1024
    return buf.getvalue()


def zip_file() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("CT_small.dcm", (SAMPLES / "CT_small.dcm").read_bytes())
    return buf.getvalue()


HOSTILE_UPLOADS: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("truncated-dicom", truncated_dicom, 415, "decode_error"),
    ("truncated-header", truncated_header, 415, "no_pixel_data"),  # cut before the pixel data
    ("dicom-65535x65535", huge_header_dicom, 413, "too_large"),
    ("png-bomb", png_bomb, 413, "too_large"),
    ("zip", zip_file, 415, "no_pixel_data"),
    ("empty", lambda: b"", 422, "validation_error"),  # the schema says minLength 1
]


@pytest.mark.parametrize(
    ("make", "status", "code"), [c[1:] for c in HOSTILE_UPLOADS], ids=[c[0] for c in HOSTILE_UPLOADS]
)
def test_hostile_upload(client: httpx.Client, make: Callable[[], bytes], status: int, code: str) -> None:
    assert_error(search_image(client, make(), "upload.dcm"), status, code)
    assert_healthy(client)


def test_hostile_parameters(client: httpx.Client, ids: dict[str, int]) -> None:
    ct = (SAMPLES / "CT_small.dcm").read_bytes()
    long_text = "consolidation " * 7500  # ~100 kB
    assert_error(client.post("/v1/search/text", json={"text": long_text}), 422, "validation_error")
    assert_error(search_image(client, ct, text=long_text), 422, "validation_error")
    similar = f"/v1/images/{ids['CT_small.dcm']}/similar"
    for k in (10**9, -5, 0):
        assert_error(client.post("/v1/search/text", json={"text": "chest", "k": k}), 422, "validation_error")
        assert_error(search_image(client, ct, k=k), 422, "validation_error")
        assert_error(client.get(similar, params={"k": k}), 422, "validation_error")
    for offset in (-1, 10**9):
        assert_error(client.post("/v1/search/text", json={"text": "chest", "offset": offset}), 422)
        assert_error(client.get(similar, params={"offset": offset}), 422)
    assert_healthy(client)


def _multipart_stream(boundary: str, size: int) -> Iterator[bytes]:
    """A multipart body with one `size`-byte file, produced 1 MiB at a time."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.dcm"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    chunk = b"\0" * (1 << 20)
    sent = 0
    while sent < size:
        piece = chunk[: min(len(chunk), size - sent)]
        sent += len(piece)
        yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def test_200_mb_upload(client: httpx.Client) -> None:
    boundary = "medsearch-test-boundary"
    size = 200 * 1024 * 1024
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    # chunked: no Content-Length for the middleware to refuse early, so the route's own limit answers
    assert_error(client.post("/v1/search/image", content=_multipart_stream(boundary, size), headers=headers), 413)
    # declared: refused from the header alone
    declared = {**headers, "content-length": str(sum(len(p) for p in _multipart_stream(boundary, 0)) + size)}
    assert_error(client.post("/v1/search/image", content=_multipart_stream(boundary, size), headers=declared), 413)
    assert_healthy(client)


def test_sql_looking_filters(client: httpx.Client, ids: dict[str, int], main_data: Path) -> None:
    ct = (SAMPLES / "CT_small.dcm").read_bytes()
    modality = "CT' OR 1=1 --"
    label = "x'; DROP TABLE images; --"
    body_part = "' OR ''='"
    similar = f"/v1/images/{ids['CT_small.dcm']}/similar"
    responses = [
        client.post("/v1/search/text", json={"text": "head", "modality": [modality], "k": 50}),
        client.post("/v1/search/text", json={"text": "head", "label": label, "k": 50}),
        client.post("/v1/search/text", json={"text": "head", "body_part": [body_part], "k": 50}),
        search_image(client, ct, modality=modality, k=50),
        search_image(client, ct, label=label, k=50),
        search_image(client, ct, body_part=body_part, k=50),
        client.get(similar, params={"modality": modality, "k": 50}),
        client.get(similar, params={"label": label, "k": 50}),
        client.get(similar, params={"body_part": body_part, "k": 50}),
    ]
    for response in responses:
        assert response.status_code == 200 and response.json()["hits"] == [], response.text
    mixed = client.post("/v1/search/text", json={"text": "head", "modality": ["CT", modality], "k": 50}).json()
    assert mixed["hits"] and {h["modality"] for h in mixed["hits"]} == {"CT"}

    db = sqlite3.connect(f"file:{main_data / 'medsearch.db'}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        images = db.execute("select count(*) from images").fetchone()[0]
        vectors = db.execute("select count(*) from vectors").fetchone()[0]
    finally:
        db.close()
    assert {"images", "vectors", "sources"} <= tables and images == vectors == N_IMAGES
    assert client.get("/v1/stats").json()["images"] == N_IMAGES
    assert_healthy(client)


# -- keys ------------------------------------------------------------------------------------------------


def v1_requests(image_id: int, ids: list[int]) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid request for every /v1 route (keyword arguments of httpx.Client.request; `_path` and `_ok` when the
    path or the status of an authorised request is not the default)."""
    mr = (SAMPLES / "MR_small.dcm").read_bytes()
    upload = {"file": ("q.dcm", mr, "application/octet-stream")}
    header = pydicom.dcmread(SAMPLES / "MR_small.dcm", stop_before_pixels=True)
    return {
        ("GET", "/v1/images/by-sop"): {"params": {"uid": str(header.SOPInstanceUID)}},
        ("GET", "/v1/series/{uid}/similar"): {"_path": f"/v1/series/{header.SeriesInstanceUID}/similar"},
        ("GET", "/v1/studies/{uid}/similar"): {"_path": f"/v1/studies/{header.StudyInstanceUID}/similar"},
        # a valid key reaches the route: the sample study has no report (404)
        ("GET", "/v1/studies/{uid}/reports"): {"_path": f"/v1/studies/{header.StudyInstanceUID}/reports", "_ok": 404},
        ("POST", "/v1/search/case"): {"files": [("files", ("q.dcm", mr, "application/octet-stream"))]},
        ("POST", "/v1/search/image"): {"files": upload, "data": {"k": "2"}},
        ("POST", "/v1/search/text"): {"json": {"text": "knee", "k": 2}},
        ("POST", "/v1/search/feedback"): {"json": {"image_id": image_id, "like": [image_id + 1], "k": 2}},
        ("GET", "/v1/images/{image_id}"): {},
        ("GET", "/v1/images/{image_id}/similar"): {"params": {"k": 2}},
        ("GET", "/v1/images/{image_id}/thumbnail"): {},
        ("GET", "/v1/images/{image_id}/preview"): {},
        ("GET", "/v1/images/{image_id}/view"): {"params": {"wc": 600, "ww": 1600}},
        ("GET", "/v1/stats"): {},
        ("GET", "/v1/summaries/status"): {},
        ("POST", "/v1/summaries"): {"json": {"query_id": image_id, "match_ids": [image_id + 1]}},
        ("POST", "/v1/summaries/stream"): {"json": {"query_id": image_id, "match_ids": [image_id + 1]}},
        ("POST", "/v1/render"): {"files": upload},
        # a valid key reaches the route: SR export is off on this server (503 export_off)
        ("POST", "/v1/export/sr"): {"files": upload, "_ok": 503},
        ("POST", "/v1/images/{image_id}/export/sr"): {"_ok": 503},
        ("GET", "/v1/render/windows"): {},
        ("GET", "/v1/tags"): {},
        ("POST", "/v1/tags/apply"): {"json": {"tags": [{"tag": "keys-test", "prompt": "any image"}]}},
        # a valid key reaches the route: an unknown name is then 404, not 401 (a delete cannot succeed thrice)
        ("DELETE", "/v1/tags/{name}"): {"_path": "/v1/tags/no-such-tag", "_ok": 404},
        ("GET", "/v1/probes"): {},
        ("POST", "/v1/probes/train"): {"json": {"name": "keys", "positive": ids[:3], "negative": ids[3:6]}},
        ("POST", "/v1/probes/{name}/apply"): {"_path": "/v1/probes/keys/apply"},
        ("GET", "/v1/probes/{name}/rank"): {"_path": "/v1/probes/keys/rank"},
        ("DELETE", "/v1/probes/{name}"): {"_path": "/v1/probes/no-such-probe", "_ok": 404},
    }


def test_keys_required_on_every_v1_route(client: httpx.Client, anon: httpx.Client, ids: dict[str, int]) -> None:
    image_id = ids["MR_small.dcm"]
    routes = v1_requests(image_id, sorted(ids.values()))
    spec = anon.get("/openapi.json").json()
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() if p.startswith("/v1") for m in ops}
    assert listed == set(routes) | PUBLIC_V1_ROUTES
    wrong: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-the-key"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": "Bearer"},
        {"X-API-Key": KEY},
    ]
    for (method, template), request in routes.items():
        kwargs = dict(request)
        path = kwargs.pop("_path", None) or template.format(image_id=image_id)
        ok = 501 if method == "POST" and template.startswith("/v1/summaries") else 200  # summaries are off here
        ok = kwargs.pop("_ok", ok)
        for headers in wrong:
            assert_error(anon.request(method, path, headers=headers, **kwargs), 401, "unauthorized")
        assert client.request(method, path, **kwargs).status_code == ok, (method, path)
        assert anon.request(method, path, headers={"Authorization": f"bearer {KEY}"}, **kwargs).status_code == ok
        assert anon.request(method, path, headers={"Authorization": f"Bearer {OTHER_KEY}"}, **kwargs).status_code == ok
    for open_path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/v1/vocabulary"):
        assert anon.get(open_path).status_code == 200, open_path


def test_public_bind_without_keys_is_refused(root: Path, main_data: Path, tiny_model: Path) -> None:
    port = free_port()
    env = service_env(main_data, tiny_model, MEDSEARCH_HOST="0.0.0.0")
    start = time.monotonic()
    proc = cli(["serve", "--host", "0.0.0.0", "--port", str(port)], env, timeout=60)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 30
    assert "refusing to listen on 0.0.0.0" in proc.stderr and "MEDSEARCH_API_KEYS" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "Uvicorn running" not in proc.stderr
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# -- a server whose model is missing ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_server(root: Path) -> Iterator[Server]:
    env = service_env(root / "broken-data", root / "no-such-model-folder")

    def failed(response: httpx.Response) -> bool:
        return response.status_code == 503 and response.json().get("code") == "model_unavailable"

    with running_server(env, root / "logs-broken", failed) as server:
        yield server


def test_missing_model_is_503_not_a_traceback(broken_server: Server) -> None:
    with make_client(broken_server.url) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert_error(ready, 503, "model_unavailable")
        assert "no-such-model-folder" in ready.json()["message"]
        assert "search by indexed image id, similar images, thumbnails" in ready.json()["message"]
        assert_error(c.post("/v1/search/text", json={"text": "chest"}), 503, "model_unavailable")
        assert_error(search_image(c, (SAMPLES / "CT_small.dcm").read_bytes()), 503, "model_unavailable")
        assert_error(c.get("/v1/images/1/similar"), 404, "not_found")  # no model needed, nothing indexed
        assert c.get("/v1/stats").json()["images"] == 0
        assert c.get("/healthz").status_code == 200
    # said at start, in one line naming what works without the model, before anyone's query meets a 503
    said = [line for line in broken_server.stderr().splitlines() if "model unavailable:" in line]
    assert len(said) == 1 and "thumbnails" in said[0] and "no-such-model-folder" in said[0], said


# -- audit log -------------------------------------------------------------------------------------------


def audit_lines(server: Server) -> list[str]:
    """The server's audit log lines: one JSON object per line, event 'audit'."""
    return [line for line in server.stderr().splitlines() if line.startswith('{"event": "audit"')]


def audit_entries(server: Server) -> list[dict[str, Any]]:
    """The audit payloads, without their event name and timestamp (checked to be ISO 8601)."""
    entries = []
    for line in audit_lines(server):
        entry = json.loads(line)
        assert entry.pop("event") == "audit"
        datetime.fromisoformat(entry.pop("time"))
        entries.append(entry)
    return entries


def audit_queries(client: httpx.Client, ids: dict[str, int], text: str) -> list[dict[str, Any]]:
    """An image, a text and an id query (and one non-query), returning the three response bodies."""
    upload = (SAMPLES / "CT_small.dcm").read_bytes()
    image = search_image(client, upload, modality=["CT", "MR"], label="ct-chest", k=4).json()
    by_text = client.post("/v1/search/text", json={"text": text, "k": 3, "date_from": "2004-01-01"}).json()
    pivot_url = f"/v1/images/{ids['MR_small.dcm']}/similar"
    pivot = client.get(pivot_url, params={"k": 2, "exclude_same_patient": True}).json()
    client.get(f"/v1/images/{ids['MR_small.dcm']}")  # not a query: not audited
    return [image, by_text, pivot]


def new_audit_entries(server: Server, before: int, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(audit_entries(server)) < before + expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return audit_entries(server)[before:]


def test_audit_log(client: httpx.Client, main_server: Server, ids: dict[str, int], main_data: Path) -> None:
    before = len(audit_entries(main_server))
    image, text, pivot = audit_queries(client, ids, "lesion")
    new = new_audit_entries(main_server, before, 3)
    assert len(new) == 3, new
    assert new[0] == {
        "key": KEY_ID,
        "kind": "image",
        "k": 4,
        "filters": {"modality": {"kind": "list", "count": 2, "codes": ["CT", "MR"]}, "label": {"kind": "text"}},
        "results": len(image["hits"]),
    }
    assert {k: new[1][k] for k in ("key", "kind", "k", "results")} == {
        "key": KEY_ID,
        "kind": "text",
        "k": 3,
        "results": 3,
    }
    assert new[1]["filters"]["date_from"] == {"kind": "date", "value": "2004-01-01"} and len(text["hits"]) == 3
    assert new[2] == {
        "key": KEY_ID,
        "kind": "id",
        "k": 2,
        "filters": {"exclude_same_patient": {"kind": "bool", "value": True}},
        "results": len(pivot["hits"]),
    }
    log = main_server.stderr() + main_server.stdout()
    assert KEY not in log and hash_key(KEY) not in log
    assert not [n for n in patient_identifiers(main_data) if n in log]
    lines = audit_lines(main_server)
    assert lines and max(len(line) for line in lines) < 1000  # no file contents


def test_audit_log_keeps_query_text_out(client: httpx.Client, main_server: Server, ids: dict[str, int]) -> None:
    marker = "zebra-stripes-7781 lesion"  # free text may carry patient details; the audit log records filters only
    before = len(audit_entries(main_server))
    audit_queries(client, ids, marker)
    new = new_audit_entries(main_server, before, 3)
    assert len(new) == 3 and new[1]["filters"] == {"date_from": {"kind": "date", "value": "2004-01-01"}}, new[1]
    assert "zebra-stripes" not in main_server.stderr() + main_server.stdout()


def test_audit_log_keeps_free_text_filter_values_out(
    client: httpx.Client, main_server: Server, ids: dict[str, int]
) -> None:
    """A name typed into any free-text filter (label, body part, a modality that is no code) never reaches the log;
    the line still says which filters were used and their kinds."""
    planted = {"label": "Roe^Richard", "body_part": ["Doe^Jane", "MRN-4471"], "modality": ["CT", "Smith^John"]}
    upload = (SAMPLES / "CT_small.dcm").read_bytes()
    before = len(audit_entries(main_server))
    assert search_image(client, upload, k=2, **planted).status_code == 200
    assert client.post("/v1/search/text", json={"text": "chest", "k": 2, **planted}).status_code == 200
    pivot = client.get(f"/v1/images/{ids['MR_small.dcm']}/similar", params={"k": 2, **planted})
    assert pivot.status_code == 200
    new = new_audit_entries(main_server, before, 3)
    assert len(new) == 3, new
    for entry in new:
        assert entry["filters"] == {
            "modality": {"kind": "list", "count": 2, "codes": ["CT"]},
            "body_part": {"kind": "list", "count": 2},
            "label": {"kind": "text"},
        }, entry
    log = main_server.stderr() + main_server.stdout()
    for value in ("Roe^Richard", "Richard", "Doe^Jane", "MRN-4471", "Smith^John"):
        assert value not in log, value


# -- freshness -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_server(root: Path, main_data: Path, tiny_model: Path) -> Iterator[Server]:
    """A server without keys over its own copy of the indexed samples, for live indexing."""
    data_dir = root / "fresh-data"
    shutil.copytree(root / "pristine", data_dir)
    with running_server(service_env(data_dir, tiny_model), root / "logs-fresh", is_ready) as server:
        yield server


def test_new_images_are_found_without_restart(root: Path, fresh_server: Server) -> None:
    incoming = root / "incoming"
    incoming.mkdir()
    for name in FRESH_NAMES:
        shutil.copy(testdata_file(name), incoming / name)
    with make_client(fresh_server.url) as c:
        pivot = hit_ids(c.post("/v1/search/text", json={"text": "anything", "k": 1}))[0]
        before = c.get("/v1/stats").json()["images"]
    assert before == N_IMAGES

    errors: list[str] = []
    done = [0]
    stop = threading.Event()

    def query_loop() -> None:
        with make_client(fresh_server.url, timeout=30) as loop_client:
            while not stop.is_set():
                try:
                    text = loop_client.post("/v1/search/text", json={"text": "scan", "k": 5})
                    similar = loop_client.get(f"/v1/images/{pivot}/similar", params={"k": 5})
                    for response in (text, similar):
                        if response.status_code != 200 or not response.json()["hits"]:
                            errors.append(f"{response.request.url}: {response.status_code} {response.text[:300]}")
                    done[0] += 2
                except Exception as exc:  # recorded, not raised: the thread must keep going
                    errors.append(repr(exc))

    thread = threading.Thread(target=query_loop, daemon=True)
    thread.start()
    try:
        proc = cli(["index", str(incoming), "--json"], fresh_server.env)
        indexed_at = time.monotonic()
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["indexed"] == len(FRESH_NAMES)
        found: dict[str, float] = {}
        with make_client(fresh_server.url) as c:
            while len(found) < len(FRESH_NAMES) and time.monotonic() - indexed_at < 5:
                for name in FRESH_NAMES:
                    if name not in found:
                        top = search_image(c, (incoming / name).read_bytes(), name, k=1).json()["hits"]
                        if top and Path(top[0]["source"]) == incoming / name and top[0]["score"] > 0.999:
                            found[name] = time.monotonic() - indexed_at
                time.sleep(0.1)
            assert sorted(found) == sorted(FRESH_NAMES), f"not searchable within 5 s: {found}"
            assert c.get("/v1/stats").json()["images"] == N_IMAGES + len(FRESH_NAMES)
            assert c.get("/readyz").json()["vectors"] == N_IMAGES + len(FRESH_NAMES)
        time.sleep(1.0)  # keep the loop running a little after the new vectors arrived
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert not errors, errors[:5]
    assert done[0] >= 10
    assert fresh_server.proc.poll() is None


def _provoke(server: Server, key: str | None, model_loaded: bool) -> None:
    """Take a server down its error paths: hostile uploads, bad parameters, unknown ids, a malformed body."""
    with make_client(server.url, key) as c:
        for _name, make, status, code in HOSTILE_UPLOADS:
            response = search_image(c, make(), "upload.dcm")
            if model_loaded:
                assert_error(response, status, code)
            else:
                assert response.status_code in (status, 503), response.text  # 503: no model to decode for
        assert_error(c.post("/v1/search/text", json={"text": "chest", "k": -5}), 422, "validation_error")
        assert_error(c.get("/v1/images/999999999/similar"), 404, "not_found")
        assert_error(c.get("/v1/images/999999999/thumbnail"), 404, "not_found")
        malformed = c.post("/v1/search/text", content=b"{not json", headers={"content-type": "application/json"})
        assert_error(malformed, 422)


def test_server_logs_have_no_tracebacks(main_server: Server, fresh_server: Server, broken_server: Server) -> None:
    """Each server is taken down its error paths here (whatever other tests did or did not run before), and then
    no server has logged a stack trace."""
    for server, key, model_loaded in (
        (main_server, KEY, True),
        (fresh_server, None, True),
        (broken_server, None, False),
    ):
        _provoke(server, key, model_loaded)
    for server in (main_server, fresh_server, broken_server):
        assert server.proc.poll() is None
        assert "Traceback" not in server.stderr() + server.stdout(), server.stderr()[-3000:]
