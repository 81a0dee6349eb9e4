"""Relevance feedback (Rocchio on unit vectors) on real DICOMs with the stand-in model: library, API and CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import BadQueryError, NotFoundError
from retrieval.feedback import ALPHA, BETA, GAMMA, MAX_MARKS, Weights, feedback_query, rocchio
from retrieval.store.repo import Filters
from tests.conftest import make_settings
from tests.service import Server, cli


@pytest.fixture(scope="module")
def col(main_data: Path, tiny_model: Path) -> Iterator[Collection]:
    """The API tests' collection (data/samples plus pydicom files of other modalities, one of them two CT frames),
    opened by the library beside the server."""
    c = Collection(make_settings(main_data, tiny_model))
    yield c
    c.close()


@pytest.fixture(scope="module")
def stored(col: Collection) -> dict[int, npt.NDArray[np.float32]]:
    """Every stored vector, read one by one from the catalog (the reference the tests compute with)."""
    out: dict[int, npt.NDArray[np.float32]] = {}
    for image_id in col.catalog.all_ids().tolist():
        vector = col.catalog.vector(int(image_id))
        assert vector is not None
        out[int(image_id)] = vector
    return out


@pytest.fixture(scope="module")
def modality(col: Collection, stored: dict[int, npt.NDArray[np.float32]]) -> dict[int, str | None]:
    return {i: img.modality for i, img in col.catalog.images(list(stored)).items()}


def expected(
    base: npt.NDArray[np.float32] | None,
    liked: list[npt.NDArray[np.float32]],
    unliked: list[npt.NDArray[np.float32]],
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> npt.NDArray[np.float64]:
    """Rocchio written out directly: normalise(alpha*q + beta*mean(liked) - gamma*mean(unliked))."""
    q = np.zeros(len(next(iter(liked), base)), dtype=np.float64)  # type: ignore[arg-type]
    if base is not None:
        q = q + alpha * np.asarray(base, np.float64)
    if liked:
        q = q + beta * np.mean(np.asarray(liked, np.float64), axis=0)
    if unliked:
        q = q - gamma * np.mean(np.asarray(unliked, np.float64), axis=0)
    return q / np.linalg.norm(q)


def test_rocchio_vector_equals_numpy(col: Collection, stored: dict[int, npt.NDArray[np.float32]]) -> None:
    ids = sorted(stored)
    like, unlike = ids[1:4], ids[5:7]
    text = engine.embed_text(col, "chest radiograph")
    pivot = engine.embed_id(col, ids[0])
    liked, unliked = [stored[i] for i in like], [stored[i] for i in unlike]
    cases: list[tuple[engine.QueryVector | None, Weights, npt.NDArray[np.float64]]] = [
        (None, Weights(), expected(None, liked, unliked)),
        (text, Weights(), expected(text.vector, liked, unliked)),
        (pivot, Weights(), expected(stored[ids[0]], liked, unliked)),
        (pivot, Weights(0.5, 2.0, 0.9), expected(stored[ids[0]], liked, unliked, 0.5, 2.0, 0.9)),
    ]
    for base, weights, want in cases:
        query = feedback_query(col, like, unlike, base=base, weights=weights)
        assert query.kind == "feedback"
        assert np.allclose(query.vector, want, atol=1e-6), (base and base.kind, weights)
        assert abs(float(np.linalg.norm(query.vector)) - 1.0) < 1e-6
        hits = engine.search(col, query, k=5, show_duplicates=True)
        for hit in hits:  # the search really ranks by the Rocchio vector
            assert abs(hit.score - float(np.dot(stored[hit.image.id], want))) < 1e-5
    # only the ratios of the weights matter, down to the smallest float (no underflow to a zero vector)
    tiny = feedback_query(col, [], [], base=text, weights=Weights(alpha=5e-324))
    assert np.allclose(tiny.vector, text.vector / np.linalg.norm(text.vector), atol=1e-6)
    scaled = feedback_query(col, like, unlike, base=pivot, weights=Weights(1e-300, 0.75e-300, 0.15e-300))
    assert np.allclose(scaled.vector, expected(stored[ids[0]], liked, unliked), atol=1e-6)
    # a text base with no marks at all is just the text query, unit length
    only_text = feedback_query(col, [], [], base=text)
    assert np.allclose(only_text.vector, text.vector / np.linalg.norm(text.vector), atol=1e-6)
    # the pure function on its own
    got = rocchio(None, np.asarray(liked), np.zeros((0, 0), np.float32))
    assert np.allclose(got, expected(None, liked, []), atol=1e-6)


def test_marked_and_base_never_returned_and_k_filled(
    col: Collection, stored: dict[int, npt.NDArray[np.float32]]
) -> None:
    ids = sorted(stored)
    like, unlike, pivot = ids[2:5], [ids[6], ids[9]], ids[0]
    marked = {*like, *unlike, pivot}
    remaining = len(ids) - len(marked)
    base = engine.embed_id(col, pivot)
    query = feedback_query(col, like, unlike, base=base)
    for k in (1, 3, remaining - 1, remaining, remaining + 5):
        hits = engine.search(col, query, k=k, show_duplicates=True)
        got = [h.image.id for h in hits]
        assert not marked & set(got), (k, got)
        assert len(got) == min(k, remaining), (k, len(got))
        assert len(set(got)) == len(got)
    everything = engine.search(col, query, k=len(ids), show_duplicates=True)
    assert {h.image.id for h in everything} == set(ids) - marked
    # the liked images would otherwise lead: without exclusions they are the nearest to the query
    direct = engine.QueryVector(vector=query.vector, kind="id")
    top = [h.image.id for h in engine.search(col, direct, k=3, show_duplicates=True)]
    assert set(top) & marked


def test_filters_honoured(
    col: Collection, stored: dict[int, npt.NDArray[np.float32]], modality: dict[int, str | None]
) -> None:
    ct = sorted(i for i, m in modality.items() if m == "CT")
    others = sorted(i for i, m in modality.items() if m != "CT")
    assert len(ct) >= 4 and others
    like, unlike = [ct[0], others[0]], [ct[1]]  # a liked image outside the filter still steers the query
    query = feedback_query(col, like, unlike)
    remaining = len(ct) - 2
    for k in (1, remaining, remaining + 3):
        hits = engine.search(col, query, k=k, filters=Filters(modality=["CT"]), show_duplicates=True)
        got = [h.image.id for h in hits]
        assert all(modality[i] == "CT" for i in got) and len(got) == min(k, remaining)
        assert not {ct[0], ct[1]} & set(got)


def test_errors(col: Collection, stored: dict[int, npt.NDArray[np.float32]]) -> None:
    ids = sorted(stored)
    missing = [max(ids) + 7, max(ids) + 3]
    with pytest.raises(NotFoundError) as info:
        feedback_query(col, [ids[0], *missing], [])
    assert str(max(ids) + 3) in str(info.value) and str(max(ids) + 7) in str(info.value)
    assert info.value.status == 404 and info.value.code == "not_found"
    with pytest.raises(NotFoundError, match=str(2**70)):
        feedback_query(col, [ids[0]], [2**70])  # no store can hold it: not found, not an overflow
    with pytest.raises(BadQueryError, match="at least one liked image or a base query"):
        feedback_query(col, [], [ids[0]])
    with pytest.raises(BadQueryError, match=f"at most {MAX_MARKS}"):
        feedback_query(col, [ids[0]] * (MAX_MARKS + 1), [])
    for bad in (Weights(beta=0.0), Weights(alpha=-1.0), Weights(gamma=-0.1), Weights(gamma=11.0)):
        with pytest.raises(BadQueryError, match="must be"):
            feedback_query(col, [ids[0]], [], weights=bad)
    with pytest.raises(BadQueryError, match="no direction"):  # the same image liked and unliked, equal weights
        feedback_query(col, [ids[0]], [ids[0]], weights=Weights(beta=0.5, gamma=0.5))


# -- API and CLI ------------------------------------------------------------------------------------------


def feedback(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/search/feedback", json=body)


@pytest.mark.e2e
def test_api_matches_library_and_cli(
    client: httpx.Client,
    main_server: Server,
    col: Collection,
    modality: dict[int, str | None],
) -> None:
    ct = sorted(i for i, m in modality.items() if m == "CT")
    others = sorted(i for i, m in modality.items() if m != "CT")
    body = {"text": "axial slice", "like": [ct[0], others[1]], "unlike": [ct[2]], "modality": ["CT"], "k": 10}
    response = feedback(client, **body, show_duplicates=True)
    assert response.status_code == 200, response.text
    result = response.json()
    got = [h["id"] for h in result["hits"]]
    assert result["query"] == "feedback" and result["standin_model"] is True
    assert got and all(modality[i] == "CT" for i in got) and not {ct[0], ct[2]} & set(got)
    assert len(got) == min(10, len(ct) - 2)
    assert all(h["text_score"] is not None for h in result["hits"])  # a text base scores its text part

    query = feedback_query(col, [ct[0], others[1]], [ct[2]], base=engine.embed_text(col, "axial slice"))
    library = engine.search(col, query, k=10, filters=Filters(modality=["CT"]), show_duplicates=True)
    assert [h.image.id for h in library] == got
    for h, a in zip(library, result["hits"], strict=True):
        assert abs(h.score - a["score"]) < 1e-5

    argv = ["search", "--text", "axial slice", "--like", str(ct[0]), "--like", str(others[1]), "--unlike", str(ct[2])]
    proc = cli([*argv, "--modality", "CT", "-k", "10", "--show-duplicates", "--json"], main_server.env)
    assert proc.returncode == 0, proc.stderr
    by_cli = json.loads(proc.stdout)
    assert by_cli["query"] == "feedback" and [h["id"] for h in by_cli["hits"]] == got

    # an image base (pivot) and no base at all
    pivot = feedback(client, image_id=others[0], like=[ct[1]], k=50, show_duplicates=True)
    assert pivot.status_code == 200 and not {others[0], ct[1]} & {h["id"] for h in pivot.json()["hits"]}
    liked_only = feedback(client, like=[ct[1]], unlike=[ct[3]], k=50, show_duplicates=True)
    ids_only = {h["id"] for h in liked_only.json()["hits"]}
    assert ids_only and not {ct[1], ct[3]} & ids_only and len(ids_only) == len(modality) - 2
    # pagination: offset continues the same ranking
    page2 = feedback(client, like=[ct[1]], unlike=[ct[3]], k=3, offset=3, show_duplicates=True).json()["hits"]
    assert [h["id"] for h in page2] == [h["id"] for h in liked_only.json()["hits"]][3:6]


@pytest.mark.e2e
def test_api_errors(
    client: httpx.Client,
    main_server: Server,
    modality: dict[int, str | None],
) -> None:
    ids = sorted(modality)
    missing = max(ids) + 11
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"like": [ids[0], missing]}, 404, "not_found", str(missing)),
        ({"like": [ids[0]], "unlike": [missing]}, 404, "not_found", str(missing)),
        ({"image_id": missing, "like": [ids[0]]}, 404, "not_found", str(missing)),
        ({}, 400, "bad_query", "at least one liked image"),
        ({"unlike": [ids[0]]}, 400, "bad_query", "at least one liked image"),
        ({"text": "x", "image_id": ids[0]}, 400, "bad_query", "not both"),
        ({"text": "   ", "like": [ids[0]]}, 400, "bad_query", "empty"),
        ({"like": [ids[0]], "unlike": [ids[0]], "gamma": 0.75}, 400, "bad_query", "no direction"),
        ({"like": [ids[0]], "beta": 0}, 422, "validation_error", "beta"),
        ({"like": [ids[0]], "gamma": False}, 422, "validation_error", "gamma"),
        ({"like": list(range(1, MAX_MARKS + 2))}, 422, "validation_error", "like"),
        ({"like": [ids[0]], "gamma": -1}, 422, "validation_error", "gamma"),
        ({"like": [True]}, 422, "validation_error", "like"),
        ({"like": [ids[0]], "k": 0}, 422, "validation_error", "k"),
    ]
    for body, status, code, words in cases:
        response = feedback(client, **body)  # the client's hook refuses stack traces and non-{code, message} errors
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code and words in response.json()["message"], (body, response.text)
    proc = cli(["search", "--like", str(missing)], main_server.env)
    assert proc.returncode == 1 and "not_found" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli(["search", "--unlike", str(ids[0])], main_server.env)
    assert proc.returncode == 2 and "--like" in proc.stderr
