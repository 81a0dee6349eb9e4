"""Tag and probe routes on a live `medsearch serve`: same keys and error shape, filters, hits with their findings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import hash_key
from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.labels import load_labels
from tests.conftest import SAMPLES, make_settings
from tests.service import KEY, KEY_ID, Server, is_ready, make_client, running_server, service_env

pytestmark = pytest.mark.e2e  # drives a live `medsearch serve` (not in `make test-fast`)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    """The samples (with labels) indexed, served with an API key."""
    root = tmp_path_factory.mktemp("findings-api")
    collection = Collection(make_settings(root / "data", tiny_model))
    try:
        run_index(collection, [SAMPLES], IndexOptions(workers=0, labels=load_labels(SAMPLES / "labels.csv")))
    finally:
        collection.close()
    env = service_env(root / "data", tiny_model, MEDSEARCH_API_KEYS=f"{KEY_ID}:{hash_key(KEY)}")
    with running_server(env, root / "logs", is_ready) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with make_client(server.url, KEY) as c:
        yield c


def _all_hits(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/search/text", json={"text": "any image", "k": 1000, "show_duplicates": True, **filters})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def test_routes_need_the_key(server: Server) -> None:
    with make_client(server.url) as anon:
        for method, path in [("GET", "/v1/tags"), ("GET", "/v1/probes"), ("POST", "/v1/probes/train")]:
            response = anon.request(method, path, json={})
            assert response.status_code == 401 and response.json()["code"] == "unauthorized"


def test_apply_a_vocabulary_then_filter_by_tag(client: httpx.Client) -> None:
    assert client.get("/v1/tags").json() == []
    vocabulary = {
        "tags": [
            {"tag": "chest", "prompt": "a chest x-ray", "threshold": 0.0},
            {"tag": "knee", "prompt": "an MR of the knee", "threshold": 1.0},
        ]
    }
    response = client.post("/v1/tags/apply", json=vocabulary)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["images"] == 10
    assert {t["tag"]: t["images"] for t in body["tags"]} == {"chest": 10, "knee": 0}  # thresholds 0 and 1
    hits = _all_hits(client)
    assert all(set(h["tags"]) == {"chest"} and 0.0 < h["tags"]["chest"] < 1.0 for h in hits)
    assert len(_all_hits(client, tag=["chest"])) == 10
    empty = client.post("/v1/search/text", json={"text": "x", "tag": "knee"}).json()
    assert empty["hits"] == [] and "tag" in empty["empty_reason"]
    refused = client.post("/v1/search/text", json={"text": "x", "tag": "nope"})
    assert refused.status_code == 404 and refused.json()["code"] == "unknown_tag"
    twice = client.post("/v1/tags/apply", json={"tags": [{"tag": "a", "prompt": "x"}, {"tag": "a", "prompt": "y"}]})
    assert twice.status_code == 200 and [t["prompt"] for t in twice.json()["tags"] if t["tag"] == "a"] == ["y"]
    for bad in (
        {"tag": "b", "prompt": "x", "threshold": True},
        {"tag": "b", "prompt": "  "},
        {"tag": "-b", "prompt": "x"},
    ):
        refused = client.post("/v1/tags/apply", json={"tags": [bad]})
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error", bad
    assert client.delete("/v1/tags/a").json() == {"removed": 1}
    assert client.delete("/v1/tags/knee").json() == {"removed": 1}
    gone = client.delete("/v1/tags/knee")
    assert gone.status_code == 404 and gone.json()["code"] == "unknown_tag"


def test_train_apply_filter_and_rank_a_probe(client: httpx.Client) -> None:
    by_label: dict[str, list[int]] = {}
    for hit in _all_hits(client):
        by_label.setdefault(hit["label"].split("-")[0], []).append(hit["id"])
    positive = by_label["mr"] + by_label["ct"][:1]  # 3 MR and a CT
    negative = by_label["us"] + by_label["cr"]  # 4
    few = client.post("/v1/probes/train", json={"name": "mr", "positive": positive[:2], "negative": negative})
    assert few.status_code == 422 and "at least 3" in few.json()["message"], few.text
    both = client.post("/v1/probes/train", json={"name": "mr", "positive": positive, "negative": positive[:3]})
    assert both.status_code == 409 and both.json()["code"] == "conflicting_labels", both.text
    unknown = client.post(
        "/v1/probes/train", json={"name": "mr", "positive": [10**12, 10**12 + 1, 10**12 + 2], "negative": negative}
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found", unknown.text
    beyond = client.post(
        "/v1/probes/train", json={"name": "mr", "positive": [2**64, 2**64 + 1, 2**63], "negative": negative}
    )
    assert beyond.status_code == 404 and beyond.json()["code"] == "not_found", beyond.text  # no store holds such ids
    response = client.post("/v1/probes/train", json={"name": "mr", "positive": positive, "negative": negative})
    assert response.status_code == 200, response.text
    trained = response.json()
    assert (trained["version"], trained["positives"], trained["negatives"], trained["folds"]) == (1, 4, 4, 4)
    assert 0.0 <= trained["cv_auc"] <= 1.0 and 0.0 <= trained["cv_accuracy"] <= 1.0 and not trained["applied"]
    not_yet = client.post("/v1/search/text", json={"text": "x", "probe": "mr"})
    assert not_yet.status_code == 409 and not_yet.json()["code"] == "probe_not_applied"
    applied = client.post("/v1/probes/mr/apply").json()
    assert applied["images"] == 10 and applied["probe"]["applied"]
    probabilities = {h["id"]: h["probes"]["mr"] for h in _all_hits(client)}
    assert len(probabilities) == 10
    for least in (0.0, 0.5, sorted(probabilities.values())[5]):
        expected = {i for i, p in probabilities.items() if p >= least}
        assert {h["id"] for h in _all_hits(client, probe="mr", min_prob=least)} == expected
    similar = client.get(f"/v1/images/{negative[0]}/similar", params={"probe": "mr", "min_prob": 0.5, "k": 3})
    assert similar.status_code == 200 and all(h["probes"]["mr"] >= 0.5 for h in similar.json()["hits"])
    rank = client.get("/v1/probes/mr/rank", params={"k": 5}).json()
    outside = sorted((p, i) for i, p in probabilities.items() if i not in set(positive + negative))
    assert [h["id"] for h in rank["hits"]] == [i for _, i in sorted(outside, key=lambda t: (-t[0], t[1]))]
    assert [h["score"] for h in rank["hits"]] == pytest.approx(sorted((p for p, _ in outside), reverse=True))
    assert [p["version"] for p in client.get("/v1/probes").json()] == [1]
    missing = client.post("/v1/probes/nope/apply")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_probe"
    assert client.delete("/v1/probes/mr").json() == {"removed": 1}
    assert client.get("/v1/probes").json() == []
