"""A strict and bounded API on a live `medsearch serve`: unknown fields and parameters are 422s naming them, keyed
routes refuse anonymous requests before reading their body, /metrics label values are bounded, /readyz shows no
server path."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.config import hash_key
from retrieval.errors import LabelsFileError
from retrieval.findings.errors import BadVocabularyError
from retrieval.findings.tags import read_vocabulary
from retrieval.labels import read_labels_table
from tests.conftest import SAMPLES
from tests.service import Server, make_client, running_server, search_image, service_env

pytestmark = pytest.mark.e2e  # a live `medsearch serve` (not in `make test-fast`)

KEY = "strict-test-key-81c4"
BIG = 64 * 1024**2  # the default upload limit: a 60 MiB upload is allowed in size, so only the key can refuse it


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("strict") / "data"
    env = service_env(
        data, tiny_model, MEDSEARCH_API_KEYS=f"tester:{hash_key(KEY)}", MEDSEARCH_MAX_UPLOAD_BYTES=str(BIG)
    )
    with running_server(env, tmp_path_factory.mktemp("logs-strict"), lambda r: r.status_code == 200) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with make_client(server.url, KEY) as c:
        yield c


def assert_unknown(response: httpx.Response, name: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error" and name in body["message"], body


# -- item 9: unknown JSON fields, query parameters and form fields ------------------------------------------


def test_unknown_json_fields_are_named(client: httpx.Client) -> None:
    assert_unknown(client.post("/v1/search/text", json={"text": "chest", "date_form": "2010-01-01"}), "date_form")
    assert client.post("/v1/search/text", json={"text": "chest", "date_from": "2010-01-01"}).status_code == 200
    assert_unknown(client.post("/v1/search/feedback", json={"text": "chest", "likes": [1]}), "likes")
    tags = {"tags": [{"tag": "effusion", "prompt": "a pleural effusion", "treshold": 0.4}]}
    assert_unknown(client.post("/v1/tags/apply", json=tags), "treshold")
    train = {"name": "p", "positive": [1, 2, 3], "negative": [4, 5, 6], "balanced": True}
    assert_unknown(client.post("/v1/probes/train", json=train), "balanced")
    assert_unknown(client.post("/v1/summaries", json={"match_ids": [1], "query_txt": "x"}), "query_txt")


def test_unknown_query_parameters_are_named(client: httpx.Client) -> None:
    assert_unknown(client.get("/v1/images/1/similar", params={"date_form": "2010-01-01"}), "date_form")
    assert client.get("/v1/images/1/similar", params={"date_from": "2010-01-01"}).status_code == 404  # known: runs
    assert_unknown(client.get("/v1/stats", params={"verbose": "1"}), "verbose")
    assert_unknown(client.get("/v1/images/1/preview", params={"windw": "lung"}), "windw")
    assert_unknown(client.get("/v1/probes/p/rank", params={"top": "3"}), "top")
    assert_unknown(client.post("/v1/search/text", params={"k": "3"}, json={"text": "chest"}), "k")
    message = client.get("/v1/stats", params={"verbose": "1"}).json()["message"]
    assert "takes: none" in message  # says what the route does take


def test_unknown_form_fields_are_named(client: httpx.Client) -> None:
    upload = (SAMPLES / "CT_small.dcm").read_bytes()
    assert_unknown(search_image(client, upload, date_form="2010-01-01"), "date_form")
    assert search_image(client, upload, date_from="2010-01-01").status_code == 200
    files = {"file": ("q.dcm", upload, "application/dicom")}
    assert_unknown(client.post("/v1/render", files=files, data={"windw": "lung"}), "windw")
    assert_unknown(client.post("/v1/summaries", files=files, data={"match_ids": "1", "scor": "1"}), "scor")


def test_cli_json_inputs_refuse_unknown_keys(tmp_path: Path) -> None:
    vocabulary = tmp_path / "tags.jsonl"
    vocabulary.write_text(json.dumps({"tag": "effusion", "prompt": "a pleural effusion", "treshold": 0.4}) + "\n")
    with pytest.raises(BadVocabularyError, match="treshold"):
        read_vocabulary(vocabulary)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"path": "a.dcm", "lable": "normal"}) + "\n")
    with pytest.raises(LabelsFileError, match="lable"):
        read_labels_table(labels)
    labels.write_text(json.dumps({"path": "a.dcm", "label": "normal", "patient": "p1"}) + "\n")
    assert read_labels_table(labels).rows[0].label == "normal"


# -- item 10: the key before the body -----------------------------------------------------------------------


def _head_only(server: Server, path: str, content_type: str, length: int) -> bytes:
    """Send a request's headers (no key) declaring `length` body bytes, send no body, return what comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        reply = b""
        try:
            while chunk := sock.recv(4096):  # until the server closes: it will not wait for the body
                reply += chunk
        except TimeoutError:
            reply += b"(nothing more within 10 s: the server waits for the body)"
        return reply


def test_anonymous_requests_are_refused_before_the_body(server: Server) -> None:
    upload = _head_only(server, "/v1/search/image", "multipart/form-data; boundary=x", 60 * 1024**2)
    assert upload.startswith(b"HTTP/1.1 401"), upload
    assert b'"code":"unauthorized"' in upload
    text = _head_only(server, "/v1/search/text", "application/json", 30 * 1000**2)
    assert text.startswith(b"HTTP/1.1 401") and text.endswith(b'"}'), text


def _rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match
    return int(match.group(1))


def test_anonymous_json_body_does_not_grow_the_server(server: Server) -> None:
    body = b'{"text": "' + b"x" * (30 * 1000**2) + b'"}'
    before = _rss_kib(server.proc.pid)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            head = "POST /v1/search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
            with contextlib.suppress(OSError):  # the server answered 401 and closed: the rest was never wanted
                sock.sendall(body)
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    grown = (_rss_kib(server.proc.pid) - before) / 1024
    print(f"server RSS growth after 3 anonymous 30 MB JSON bodies: {grown:.1f} MiB")
    assert grown < 20, f"the server grew by {grown:.0f} MiB"


# -- item 11: bounded /metrics ------------------------------------------------------------------------------


def _series(client: httpx.Client) -> set[str]:
    """The label sets of the request counter (one series each), leaving out the scrapes themselves."""
    lines = client.get("/metrics").text.splitlines()
    return {line.split("{", 1)[1].rsplit("}", 1)[0] for line in lines if line.startswith("medsearch_requests_total{")}


def _odd_method(client: httpx.Client, method: str, path: str) -> None:
    """An invented method: the app answers 405/404 as {code, message} when the HTTP parser passes it on (h11);
    httptools (uvicorn's parser when installed) knows only the registered methods and refuses the request line
    itself with a plain 400, before the app or its metrics see it."""
    response = httpx.request(method, client.base_url.join(path), headers=client.headers, timeout=30.0)
    parser_refused = response.status_code == 400 and response.text == "Invalid HTTP request received."
    assert parser_refused or response.json()["code"] in ("method_not_allowed", "not_found"), response.text[:200]


def test_metrics_labels_are_bounded(client: httpx.Client) -> None:
    client.get("/healthz")
    before = _series(client)
    for i in range(300):
        _odd_method(client, f"INVENTED{i}", f"/made/up/{i}")
        _odd_method(client, f"BREW{i}", "/v1/stats")
        client.get(f"/no/such/{i}")
    after = _series(client)
    new = sorted(after - before - {s for s in after if 'route="/metrics"' in s})
    print(f"/metrics request series: {len(before)} before, {len(after)} after 900 odd requests: {new[:5]}")
    labels = {value for series in after for value in re.findall(r'(?:method|route)="([^"]*)"', series)}
    assert not [v for v in labels if "INVENTED" in v or "BREW" in v or "/made/" in v or "/no/such" in v], labels
    assert len(new) <= 3, (len(new), new[:5])  # (other, other, 404), (other, /v1/stats, 405), (GET, other, 404)


# -- item 14: /readyz shows no server path ------------------------------------------------------------------


def test_readyz_shows_the_model_name_not_its_path(server: Server, tiny_model: Path) -> None:
    with make_client(server.url) as anon:
        ready = anon.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == tiny_model.name
    assert str(tiny_model.parent) not in ready.text


def test_readyz_error_shows_no_server_path(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "no-such-model-folder"
    env = service_env(tmp_path / "data", missing)
    known = lambda r: r.status_code == 503 and r.json().get("code") == "model_unavailable"  # noqa: E731
    with running_server(env, tmp_path / "logs", known) as broken, make_client(broken.url) as anon:
        ready = anon.get("/readyz")
    body = ready.json()
    assert body["code"] == "model_unavailable" and "no-such-model-folder" in body["message"], body
    assert str(tmp_path) not in ready.text, body


# the routes documented as answering without a key (docs: "Routes without a key"); /metrics with the default
# MEDSEARCH_METRICS_PUBLIC=true
KEYLESS = {
    ("get", "/"),
    ("get", "/static/main.js"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("get", "/static-docs/swagger-ui-bundle.js"),
    ("get", "/redoc"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/vocabulary"),
}


def test_the_documented_keyless_routes_are_all_there_are(server: Server) -> None:
    with make_client(server.url) as anon:
        spec = anon.get("/openapi.json").json()
        routes = {(m, p) for p, ops in spec["paths"].items() for m in ops} | {(m, p) for m, p in KEYLESS}
        answered = {}
        for method, path in sorted(routes):
            response = anon.request(method.upper(), path.format(image_id=1, name="x", uid="1.2.3"))
            if response.status_code != 401:
                answered[(method, path)] = response.status_code
    assert set(answered) == KEYLESS
    assert set(answered.values()) == {200}, answered  # each answers for real, not with a 404 or a 500
