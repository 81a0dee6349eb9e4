"""The API against clients we did not write: Schemathesis drives a live `medsearch serve` from its OpenAPI (with and
without keys); plus the edges it found: ids beyond int64, strict bodies, blank dates, 405 `Allow`, /metrics access."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from api.app import create_app
from api.config import ServiceSettings, hash_key
from api.findings_schemas import TagIn
from api.openapi import PUBLIC_V1, STATUSES
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.findings.errors import BadVocabularyError
from retrieval.findings.tags import PROMPT_PATTERN, TagSpec, check_vocabulary
from tests.conftest import SAMPLES, make_settings
from tests.service import Server, make_client, running_server, search_image, service_env

pytestmark = pytest.mark.e2e  # drives live `medsearch serve` processes (not in `make test-fast`)

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
KEY = "contract-test-key-5d0e"
EXAMPLES = 20  # per operation and phase: the whole contract test stays within a few minutes on 2 shared cores
SEED = 20261202
INT64 = 2**63


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    data_dir = tmp_path_factory.mktemp("contract") / "data"
    collection = Collection(make_settings(data_dir, tiny_model))
    try:
        summary = run_index(collection, [SAMPLES], IndexOptions(workers=0))
    finally:
        collection.close()
    assert summary.indexed > 0 and summary.failed == 0
    return data_dir


@pytest.fixture(scope="module")
def open_server(data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = service_env(data, tiny_model)
    with running_server(env, tmp_path_factory.mktemp("logs-open"), lambda r: r.status_code == 200) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server(data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = service_env(data, tiny_model, MEDSEARCH_API_KEYS=f"tester:{hash_key(KEY)}", MEDSEARCH_METRICS_PUBLIC="false")
    with running_server(env, tmp_path_factory.mktemp("logs-keyed"), lambda r: r.status_code == 200) as server:
        yield server


def schemathesis(server: Server, *extra: str) -> subprocess.CompletedProcess[str]:
    """Schemathesis with its default checks; a 5xx passes `not_a_server_error` only if some route documents it
    (501-504: summaries off, PACS or backend down, timeout), and `status_code_conformance` still fails any status a
    route does not document. 500 always fails."""
    documented = sorted({s for statuses in STATUSES.values() for s in statuses if s >= 500})
    config = server.logs / "schemathesis.toml"
    # a schema cannot say "a decodable image": random bytes in an upload get the documented 415, not a success
    # and a `report` filter is any string to a schema, but words with an unclosed quote get the documented 400
    accepted = ["2xx", "3xx", "400", "401", "403", "404", "409", "415", "429", "5xx"]
    config.write_text(
        "[checks.not_a_server_error]\n"
        f"expected-statuses = {json.dumps(['2xx', '3xx', '4xx', *map(str, documented)])}\n"
        "[checks.positive_data_acceptance]\n"
        f"expected-statuses = {json.dumps(accepted)}\n"
    )
    argv = [SCHEMATHESIS, "--config-file", str(config), "run", f"{server.url}/openapi.json"]
    argv += ["--max-examples", str(EXAMPLES), "--seed", str(SEED)]
    argv += ["--workers", "1", "--request-timeout", "60", "--no-color", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=server.logs)


@pytest.mark.slow  # about a minute and a half per run on 2 cores
@pytest.mark.parametrize("keyed", [False, True], ids=["no-keys", "keys"])
def test_schemathesis_finds_nothing(keyed: bool, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue("keyed_server" if keyed else "open_server")
    start = time.monotonic()
    run = schemathesis(server, *(["-H", f"Authorization: Bearer {KEY}"] if keyed else []))
    took = time.monotonic() - start
    print(f"schemathesis ({'keys' if keyed else 'no keys'}): {took:.0f} s")  # shown with -s; README test section
    (server.logs / "schemathesis.out").write_text(run.stdout + run.stderr)
    report = run.stdout[-12000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "passed" in run.stdout and took < 600, report
    assert "Traceback" not in server.stderr()


def test_every_route_documents_its_statuses(tiny_model: Path, tmp_path: Path) -> None:
    for keys in ("", f"tester:{hash_key(KEY)}"):
        settings = ServiceSettings(data_dir=tmp_path, model=str(tiny_model), api_keys=keys)
        spec = create_app(settings).openapi()
        routes = {(m, p) for p, ops in spec["paths"].items() for m in ops}
        assert routes == set(STATUSES), "a route is missing from api/openapi.py STATUSES (or listed but gone)"
        assert "HTTPValidationError" not in str(spec)
        for (method, path), statuses in STATUSES.items():
            documented = spec["paths"][path][method]["responses"]
            for status in statuses:
                assert documented[str(status)]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorModel"
                }, (method, path, status)
            public = (method, path) in PUBLIC_V1  # /v1/vocabulary: test_api checks it answers without a key
            assert ("401" in documented) == (bool(keys) and path.startswith("/v1/") and not public), (method, path)
        assert ("securitySchemes" in spec["components"]) == bool(keys)


def _probe_ids(client: httpx.Client) -> None:
    for image_id in (INT64, 2**64, -INT64 - 1, -INT64, 0, -1, 10**30):
        for suffix in ("", "/thumbnail", "/preview", "/view", "/similar"):
            response = client.get(f"/v1/images/{image_id}{suffix}")
            assert response.status_code == 404 and response.json()["code"] == "not_found", (image_id, suffix)
    for suffix in ("", "/thumbnail", "/preview", "/similar"):  # the largest int64 is a valid id nobody has
        assert client.get(f"/v1/images/{INT64 - 1}{suffix}").status_code == 404
    body = {"match_ids": [INT64], "query_id": 2**64}
    assert client.post("/v1/summaries", json=body).status_code in (404, 501)  # never 500


def test_ids_outside_int64_are_not_found(open_server: Server, keyed_server: Server) -> None:
    with make_client(open_server.url) as client:
        _probe_ids(client)
    with make_client(keyed_server.url, KEY) as client:
        _probe_ids(client)
    with make_client(keyed_server.url) as anon:  # the key is checked before the id
        assert anon.get(f"/v1/images/{INT64}").status_code == 401


def test_bodies_are_as_strict_as_their_schema(open_server: Server) -> None:
    with make_client(open_server.url) as client:
        for field, value in (("offset", False), ("k", True), ("exclude_same_patient", 1), ("date_from", 0)):
            response = client.post("/v1/search/text", json={"text": "chest", field: value})
            assert response.status_code == 422 and response.json()["code"] == "validation_error", (field, value)
        assert client.post("/v1/search/text", json={"text": "chest", "date_from": "2001-02-03"}).status_code == 200
        upload = (SAMPLES / "CT_small.dcm").read_bytes()
        blank = search_image(client, upload, date_from="", date_to="", k=3)  # a cleared form field: no bound
        assert blank.status_code == 200, blank.text
        assert search_image(client, upload, date_to="yesterday").status_code == 422
        assert client.get("/v1/images/1/similar", params={"date_to": ""}).status_code in (200, 404)
        traced = client.request("TRACE", "/v1/stats")
        assert traced.status_code == 405 and traced.headers["allow"] == "GET"
        assert traced.json()["code"] == "method_not_allowed"


def test_metrics_access_follows_the_setting(open_server: Server, keyed_server: Server) -> None:
    with make_client(open_server.url) as anon:
        assert anon.get("/metrics").status_code == 200  # no keys, default: open
    with make_client(keyed_server.url) as anon:
        response = anon.get("/metrics")  # keys configured and MEDSEARCH_METRICS_PUBLIC=false
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    with make_client(keyed_server.url, KEY) as client:
        assert "medsearch" in client.get("/metrics").text


def _first_id(client: httpx.Client) -> int:
    hits = client.post("/v1/search/text", json={"text": "chest", "k": 1}).json()["hits"]
    return int(hits[0]["id"])


def test_schemathesis_findings(open_server: Server) -> None:
    """What Schemathesis found: an empty `window=` taken as "as indexed" (200), an empty upload the schema allowed
    answered 415; both are now refused as the schema says."""
    upload = (SAMPLES / "CT_small.dcm").read_bytes()
    with make_client(open_server.url) as client:
        image_id = _first_id(client)
        assert client.get(f"/v1/images/{image_id}/preview").status_code == 200
        empty = client.get(f"/v1/images/{image_id}/preview", params={"window": ""})
        assert empty.status_code == 400 and empty.json()["code"] == "bad_query", empty.text
        files = {"file": ("q.dcm", upload, "application/dicom")}
        assert client.post("/v1/render", files=files).status_code == 200
        for path in ("/v1/search/image", "/v1/render"):
            response = client.post(path, files={"file": ("q.dcm", b"", "application/dicom")})
            assert response.status_code == 422 and "file" in response.json()["message"], (path, response.text)
        spec = client.get("/openapi.json").json()
    for name in ("Body_search_image_v1_search_image_post", "Body_render_upload_v1_render_post"):
        assert spec["components"]["schemas"][name]["properties"]["file"]["minLength"] == 1
    summary = spec["paths"]["/v1/summaries"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert summary["properties"]["file"]["minLength"] == 1


def test_prompt_pattern_is_the_rule_the_handler_applies() -> None:
    """The tag prompt's schema pattern and the vocabulary check agree on every control and space character (`\\S`
    let "\\x1f" through the schema, which str.strip() then refused)."""
    prompt_schema = TagIn.model_json_schema()["properties"]["prompt"]
    assert prompt_schema["pattern"] == PROMPT_PATTERN
    odd = [chr(c) for c in range(0x00, 0x100)] + [chr(c) for c in (0x1680, *range(0x2000, 0x2030), 0x205F, 0x3000)]
    for text in [*odd, "\ufeff", "x\x1f", "\x1fx"]:
        try:
            TagIn(tag="t", prompt=text)
            schema_ok = True
        except ValidationError:
            schema_ok = False
        try:
            check_vocabulary([TagSpec("t", text, 0.5)])
            handler_ok = True
        except BadVocabularyError:
            handler_ok = False
        assert schema_ok == handler_ok == bool(re.search(PROMPT_PATTERN, text)), repr(text)
        assert not handler_ok or text.strip(), repr(text)  # nothing the handler takes is blank to Python either
