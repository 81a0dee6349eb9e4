"""Comparative summaries: the transformers backend on a tiny Gemma 3, `transformers serve` and a misbehaving
server on loopback for the OpenAI-compatible backend, the routes (whole and streamed), the cache and the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from api.app import create_app
from api.config import ServiceSettings
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.labels import load_labels
from retrieval.summarize.base import (
    NOTICE,
    SummaryBadReplyError,
    SummaryCase,
    SummaryRequest,
    SummaryTimeoutError,
    SummaryTooLongError,
    SummaryUnavailableError,
)
from retrieval.summarize.hf import TransformersSummarizer
from retrieval.summarize.openai_compat import OpenAICompatSummarizer
from retrieval.summarize.prompt import TASK
from tests.conftest import SAMPLES, make_settings, running_process
from tests.misbehaving_server import Misbehaving

NEW_TOKENS = 24
MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
TRANSFORMERS_CLI = Path(sys.executable).parent / "transformers"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pictures() -> list[PILImage.Image]:
    rng = np.random.default_rng(0)
    return [PILImage.fromarray(rng.integers(0, 255, (300 + 40 * i, 256), dtype=np.uint8)) for i in range(4)]


def _request(matches: int = 2) -> SummaryRequest:
    """A query image and `matches` prior cases with their records (three images for matches=2)."""
    pics = _pictures()
    records = [
        ("CT", "ct-head", "Normal head CT without acute findings."),
        ("MR", "mr-head", None),
        ("CR", "cr-chest", "Right lower lobe consolidation."),
    ]
    cases = [
        SummaryCase(pics[i + 1], image_id=11 + i, score=0.9 - 0.1 * i, modality=m, label=lab, report=rep)
        for i, (m, lab, rep) in enumerate(records[:matches])
    ]
    return SummaryRequest(matches=cases, query_key="test-query", query=SummaryCase(pics[0]))


@pytest.fixture(scope="module")
def local(tiny_gemma: Path) -> TransformersSummarizer:
    summarizer = TransformersSummarizer(str(tiny_gemma), max_new_tokens=NEW_TOKENS, timeout_seconds=120)
    summarizer.load()
    return summarizer


# -- acceptance 1: the transformers backend, end to end ----------------------------------------------------


def test_transformers_backend_three_images_and_text_in_text_out(local: TransformersSummarizer) -> None:
    assert type(local._model).__name__ == "Gemma3ForConditionalGeneration"  # MedGemma's classes
    assert type(local._processor).__name__ == "Gemma3Processor"
    size, per_image = local.image_size, local.tokens_per_image
    assert (size, per_image) == (local._processor.image_processor.size.height, local._model.config.mm_tokens_per_image)
    request = _request(matches=2)
    inputs = local._inputs(request)
    image_token = local._processor.tokenizer.image_token_id
    assert int((inputs["input_ids"] == image_token).sum()) == 3 * per_image
    assert tuple(inputs["pixel_values"].shape) == (3, 3, size, size)
    prompt = local._processor.decode(inputs["input_ids"][0])
    assert prompt.index("Query image:") < prompt.index("Case 1:") < prompt.index("Case 2:")
    assert "similarity 0.900" in prompt and "label 'ct-head'" in prompt and "Normal head CT" in prompt
    assert TASK[:40] in prompt and prompt.rstrip().endswith("<start_of_turn>model")

    summary = local.summarize(request)
    assert summary.text and summary.compared_ids == [11, 12] and summary.dropped_ids == []
    assert summary.notice == NOTICE and summary.prompt_tokens == inputs["input_ids"].shape[-1]
    chunks = list(local.stream(request))
    assert len(chunks) > 1  # streamed token by token
    assert "".join(chunks).strip() == summary.text  # greedy decoding: the same words either way


def test_token_budget_drops_matches_then_refuses_clearly(tiny_gemma: Path, local: TransformersSummarizer) -> None:
    lengths = [int(local._inputs(_request(n))["input_ids"].shape[-1]) for n in (1, 2, 3)]
    assert lengths[0] < lengths[1] < lengths[2]
    two_fit = TransformersSummarizer(str(tiny_gemma), max_new_tokens=NEW_TOKENS, context_tokens=lengths[1] + NEW_TOKENS)
    fitted = two_fit.fit(_request(3))
    assert fitted.match_ids == [11, 12]
    summary = two_fit.summarize(_request(3))
    assert summary.compared_ids == [11, 12] and summary.dropped_ids == [13] and summary.text

    none_fit = TransformersSummarizer(
        str(tiny_gemma), max_new_tokens=NEW_TOKENS, context_tokens=lengths[0] + NEW_TOKENS - 1
    )
    with pytest.raises(SummaryTooLongError, match=r"needs \d+ tokens .* MEDSEARCH_SUMMARY_MAX_NEW_TOKENS"):
        none_fit.summarize(_request(3))


def test_closing_a_stream_stops_the_generation(tiny_gemma: Path) -> None:
    """A reader that goes away (Cancel in the page) frees the model at once instead of after all the tokens."""
    long = TransformersSummarizer(str(tiny_gemma), max_new_tokens=7000, timeout_seconds=300)
    chunks = long.stream(_request(1))
    assert next(chunks)
    chunks.close()  # what the route does when the client disconnects
    # 7000 tokens take minutes on this CPU; a stopped generation releases the lock within a token or two
    assert long._generate_lock.acquire(timeout=20), "generation went on after the stream was closed"
    long._generate_lock.release()


def test_openai_budget_counts_256_tokens_per_image() -> None:
    """No tokenizer on the client side: the estimate counts MedGemma's 256 tokens per image plus the text."""
    probe = OpenAICompatSummarizer("http://127.0.0.1:9/v1", "m", max_new_tokens=100, image_tokens=256)
    three = probe.estimate_tokens(_request(3))
    assert three - probe.estimate_tokens(_request(2)) > 256  # one more image and its record
    tight = OpenAICompatSummarizer(
        "http://127.0.0.1:9/v1", "m", max_new_tokens=100, context_tokens=probe.estimate_tokens(_request(2)) + 100
    )
    assert tight.fit(_request(3)).match_ids == [11, 12]
    none_fit = OpenAICompatSummarizer("http://127.0.0.1:9/v1", "m", max_new_tokens=100, context_tokens=600)
    with pytest.raises(SummaryTooLongError, match="MEDSEARCH_SUMMARY_CONTEXT_TOKENS"):
        none_fit.fit(_request(3))
    for client in (probe, tight, none_fit):
        client.close()


def test_missing_model_is_a_clear_unavailable_error(tmp_path: Path) -> None:
    broken = TransformersSummarizer(str(tmp_path / "nowhere"), max_new_tokens=4)
    with pytest.raises(SummaryUnavailableError, match="make-test-summarizer"):
        broken.fit(_request(1))


# -- acceptance 2: a real OpenAI-compatible server (`transformers serve`) -----------------------------------


@pytest.fixture(scope="module")
def served(tiny_gemma: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`transformers serve` on a free loopback port, loading the stand-in; stopped by its PID."""
    if not TRANSFORMERS_CLI.exists():
        pytest.fail(f"{TRANSFORMERS_CLI} is missing: `pip install 'transformers[serving]'` (the dev extra has it)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    argv = [str(TRANSFORMERS_CLI), "serve", str(tiny_gemma), "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with running_process(argv, env, f"{base}/health", log_path, timeout=180):
        yield base


@pytest.mark.peers  # a real `transformers serve` process
def test_openai_backend_against_transformers_serve(
    served: str, tiny_gemma: Path, local: TransformersSummarizer
) -> None:
    remote = OpenAICompatSummarizer(
        f"{served}/v1", str(tiny_gemma), max_new_tokens=NEW_TOKENS, image_size=local.image_size, timeout_seconds=120
    )
    try:
        request = _request(matches=2)
        summary = remote.summarize(request)  # three base64 image_url parts and the text, one user turn
        assert summary.compared_ids == [11, 12] and summary.notice == NOTICE
        # the server ran the same weights on the same prompt: the same greedy words as in-process
        assert summary.text == local.summarize(request).text
        assert summary.prompt_tokens == local._inputs(request)["input_ids"].shape[-1]
        chunks = list(remote.stream(request))
        assert len(chunks) > 1 and "".join(chunks).strip() == summary.text
    finally:
        remote.close()


# -- a misbehaving server: every failure is a clear error, never a hang --------------------------------------


@pytest.fixture(scope="module")
def bad_server() -> Iterator[Misbehaving]:
    server = Misbehaving()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.server.shutdown()
        server.server.server_close()


TIMEOUT = 2.0


def _client(url: str, retries: int = 2) -> OpenAICompatSummarizer:
    return OpenAICompatSummarizer(
        url, "medgemma", timeout_seconds=TIMEOUT, retries=retries, backoff_seconds=0.05, image_size=32
    )


@pytest.mark.parametrize(
    ("mode", "stream", "error", "message"),
    [
        ("s500", False, SummaryUnavailableError, r"HTTP 500 \(after 3 attempts; MEDSEARCH_SUMMARY_RETRIES\)"),
        ("s401", False, SummaryUnavailableError, r"refused the API key \(MEDSEARCH_SUMMARY_API_KEY\): HTTP 401"),
        ("hang", False, SummaryTimeoutError, r"did not answer within 2 s \(MEDSEARCH_SUMMARY_TIMEOUT_SECONDS\)"),
        ("hang", True, SummaryTimeoutError, r"did not answer within 2 s"),
        ("badjson", False, SummaryBadReplyError, r"not a chat completion \(JSONDecodeError\)"),
        ("nochoices", False, SummaryBadReplyError, r"not a chat completion \(KeyError\)"),
        ("brokensse", True, SummaryBadReplyError, r"malformed stream event"),
        ("truncated", True, SummaryBadReplyError, r"stream ended before the reply was complete"),
        ("stall", True, SummaryTimeoutError, r"took longer than 2 s"),
    ],
)
def test_misbehaving_server_gives_clear_errors(
    bad_server: Misbehaving, mode: str, stream: bool, error: type[Exception], message: str
) -> None:
    before = bad_server.hits.get(mode, 0)
    client = _client(bad_server.url(mode))
    started = time.monotonic()
    try:
        with pytest.raises(error, match=message):
            if stream:
                list(client.stream(_request(1)))
            else:
                client.summarize(_request(1))
    finally:
        client.close()
    assert time.monotonic() - started < 3 * TIMEOUT + 5  # bounded by the configured timeout: never a hang
    attempts = bad_server.hits[mode] - before
    assert attempts == (3 if mode == "s500" else 1)  # only 5xx and connection failures are retried


def test_retry_recovers_and_unreachable_server_is_unavailable(bad_server: Misbehaving) -> None:
    client = _client(bad_server.url("flaky"))
    try:
        assert client.summarize(_request(1)).text == "Both show a normal head."
        assert bad_server.hits["flaky"] == 2  # one 503, then the answer
        assert "".join(client.stream(_request(1))) == "Both show a normal head."
    finally:
        client.close()
    nobody = _client(f"http://127.0.0.1:{_free_port()}/v1", retries=1)
    try:
        with pytest.raises(SummaryUnavailableError, match=r"cannot reach the summary server .*\(after 2 attempts"):
            nobody.summarize(_request(1))
    finally:
        nobody.close()


# -- the routes ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/samples indexed with the tiny SigLIP (labels and reports from labels.csv)."""
    folder = tmp_path_factory.mktemp("summaries") / "data"
    collection = Collection(make_settings(folder, tiny_model))
    try:
        summary = run_index(collection, [SAMPLES], IndexOptions(labels=load_labels(SAMPLES / "labels.csv")))
    finally:
        collection.close()
    assert summary.indexed == 10 and summary.failed == 0
    return folder


def _app_client(data_dir: Path, tiny_model: Path, **summary: Any) -> TestClient:
    settings = ServiceSettings(data_dir=data_dir, model=str(tiny_model), workers=0, **summary)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def api(data_dir: Path, tiny_model: Path, tiny_gemma: Path) -> Iterator[TestClient]:
    """The service with the transformers backend on the stand-in."""
    with _app_client(
        data_dir,
        tiny_model,
        summarizer="transformers",
        summary_model=str(tiny_gemma),
        summary_max_new_tokens=NEW_TOKENS,
    ) as client:
        yield client


def _by_name(client: TestClient) -> dict[str, int]:
    catalog = client.app.state.service.collection.catalog  # type: ignore[attr-defined]
    rows = catalog.images(list(range(1, 11)))
    return {Path(img.source_uri).name: img_id for img_id, img in rows.items()}


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_summary_routes_whole_streamed_and_cached(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    names = _by_name(api)
    status = api.get("/v1/summaries/status").json()
    assert status["enabled"] is True and status["backend"] == "transformers" and status["matches"] == 4
    assert status["standin"] is True  # the tiny Gemma carries the stand-in marker: the page announces it
    query = names["CT_small.dcm"]
    matches = [names[n] for n in ("MR_small.dcm", "CT_small.dcm", "emri_small.dcm", "JPEG-LL.dcm", "RG1_J2KI.dcm")]
    with caplog.at_level(logging.INFO, logger="medsearch.audit"):
        response = api.post("/v1/summaries", json={"query_id": query, "match_ids": matches})
    assert response.status_code == 200, response.text
    body = response.json()
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "medsearch.audit"]
    assert len(audit) == 1 and audit[0]["kind"] == "summary:id" and audit[0]["compared"] == 4
    assert set(audit[0]) == {"event", "time", "key", "kind", "compared", "cached", "streamed"}  # no ids, no text
    expected = [m for m in matches if m != query][:4]  # the query itself is never a match; the top 4 are compared
    assert body["compared_ids"] == expected and body["query"] == "id" and body["notice"] == NOTICE
    assert body["summary"] and body["cached"] is False and body["dropped_ids"] == []
    again = api.post("/v1/summaries", json={"query_id": query, "match_ids": matches}).json()
    assert again["cached"] is True and again["summary"] == body["summary"]

    # streamed, for a pair not seen before: start, several chunks, done; the result is cached afterwards
    pair = [names["MR_small.dcm"], names["RG3_J2KI.dcm"]]
    with api.stream("POST", "/v1/summaries/stream", json={"query_id": query, "match_ids": pair}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        events = _events(streamed.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("chunk") > 1
    assert set(kinds[1:-1]) == {"chunk"}
    assert events[0][1]["compared_ids"] == pair and events[-1][1]["notice"] == NOTICE
    text = "".join(data["text"] for kind, data in events if kind == "chunk").strip()
    whole = api.post("/v1/summaries", json={"query_id": query, "match_ids": pair}).json()
    assert whole["cached"] is True and whole["summary"] == text

    # an uploaded query image (multipart), match ids comma-separated, scores passed along
    upload = api.post(
        "/v1/summaries",
        files={"file": ("query.dcm", (SAMPLES / "CT_small.dcm").read_bytes(), "application/dicom")},
        data={"match_ids": f"{pair[0]},{pair[1]}", "scores": "0.91,0.80", "query_text": "head"},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["query"] == "image" and upload.json()["compared_ids"] == pair


def test_summary_route_errors_are_clear(api: TestClient) -> None:
    names = _by_name(api)
    some = names["MR_small.dcm"]
    cases = [
        ({"json": {"query_id": some, "match_ids": [99999]}}, 404, "not_found"),
        ({"json": {"query_id": some, "match_ids": []}}, 422, "validation_error"),
        ({"json": {"match_ids": [some]}}, 400, "bad_query"),
        ({"content": b"query_id=1", "headers": {"content-type": "text/plain"}}, 400, "bad_query"),
        ({"json": {"query_id": some, "match_ids": [some]}}, 400, "bad_query"),
        ({"files": {"file": ("x.png", b"not an image", "image/png")}, "data": {"match_ids": str(some)}}, 415, None),
    ]
    for route in ("/v1/summaries", "/v1/summaries/stream"):
        for kwargs, status, code in cases:
            response = api.post(route, **kwargs)
            assert response.status_code == status, (route, kwargs, response.text)
            body = response.json()
            assert set(body) == {"code", "message"} and (code is None or body["code"] == code), body


def test_disabled_summarizer_is_501_with_the_way_to_enable_it(data_dir: Path, tiny_model: Path) -> None:
    with _app_client(data_dir, tiny_model) as client:
        status = client.get("/v1/summaries/status").json()
        assert status["enabled"] is False and "MEDSEARCH_SUMMARIZER" in status["message"]
        assert status["standin"] is False
        for route in ("/v1/summaries", "/v1/summaries/stream"):
            response = client.post(route, json={"query_id": 1, "match_ids": [2]})
            assert response.status_code == 501
            assert response.json()["code"] == "summarizer_disabled"
            assert "MEDSEARCH_SUMMARIZER=transformers" in response.json()["message"]


def test_server_failures_through_the_routes(bad_server: Misbehaving, data_dir: Path, tiny_model: Path) -> None:
    def app_for(mode: str) -> TestClient:
        return _app_client(
            data_dir,
            tiny_model,
            summarizer="openai",
            summary_url=bad_server.url(mode),
            summary_timeout_seconds=TIMEOUT,
            summary_retries=0,
            summary_image_size=32,
        )

    with app_for("hang") as client:
        response = client.post("/v1/summaries", json={"query_id": 1, "match_ids": [2, 3]})
        assert response.status_code == 504 and response.json()["code"] == "summary_timeout"
    with app_for("s500") as client:
        response = client.post("/v1/summaries/stream", json={"query_id": 1, "match_ids": [2, 3]})
        assert response.status_code == 503 and response.json()["code"] == "summarizer_unavailable"
    with app_for("badjson") as client:
        response = client.post("/v1/summaries", json={"query_id": 1, "match_ids": [2]})
        assert response.status_code == 502 and response.json()["code"] == "summary_bad_reply"
    with app_for("brokensse") as client:
        response = client.post("/v1/summaries/stream", json={"query_id": 1, "match_ids": [2]})
        assert response.status_code == 200  # the stream had started: the error arrives as an event
        events = _events(response.text)
        assert [kind for kind, _ in events] == ["start", "chunk", "error"]
        assert events[1][1]["text"] == "Common findings: "
        assert events[2][1]["code"] == "summary_bad_reply" and "malformed" in events[2][1]["message"]


def test_openai_setting_without_url_is_refused_at_start(data_dir: Path, tiny_model: Path) -> None:
    from retrieval.errors import MedsearchError

    with pytest.raises(MedsearchError, match="needs MEDSEARCH_SUMMARY_URL"):
        create_app(ServiceSettings(data_dir=data_dir, model=str(tiny_model), summarizer="openai"))


# -- the CLI -------------------------------------------------------------------------------------------------


def _cli(args: list[str], data_dir: Path, tiny_model: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEARCH_")}
    full.update(
        HF_HUB_OFFLINE="1",
        COLUMNS="200",
        MEDSEARCH_DATA_DIR=str(data_dir),
        MEDSEARCH_MODEL=str(tiny_model),
        MEDSEARCH_WORKERS="0",
        **env,
    )
    return subprocess.run([MEDSEARCH, *args], env=full, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e  # the real `medsearch search --summarize`
def test_cli_search_summarize(data_dir: Path, tiny_model: Path, tiny_gemma: Path, tmp_path: Path) -> None:
    cli_data = tmp_path / "data"
    shutil.copytree(data_dir, cli_data)
    env = {"MEDSEARCH_SUMMARIZER": "transformers", "MEDSEARCH_SUMMARY_MODEL": str(tiny_gemma)}
    env["MEDSEARCH_SUMMARY_MAX_NEW_TOKENS"] = str(NEW_TOKENS)
    done = _cli(["search", "--id", "3", "-k", "5", "--summarize", "--json"], cli_data, tiny_model, **env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    hit_ids = [h["id"] for h in report["hits"]]
    summary = report["summary"]
    assert summary["compared_ids"] == hit_ids[:4] and summary["notice"] == NOTICE and summary["text"]

    query = str(SAMPLES / "MR_small.dcm")
    table = _cli(["search", "--image", query, "-k", "3", "--summarize"], cli_data, tiny_model, **env)
    assert table.returncode == 0, table.stderr
    assert "Summary by" in table.stdout and "Not for diagnosis" in table.stdout
    assert table.stdout.index("similar images") < table.stdout.index("Summary by")

    off = _cli(["search", "--id", "3", "--summarize"], cli_data, tiny_model)
    assert off.returncode == 1 and "summarizer_disabled" in off.stderr and "MEDSEARCH_SUMMARIZER" in off.stderr
    assert "Traceback" not in off.stderr
