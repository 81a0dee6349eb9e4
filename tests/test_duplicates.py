"""Near-duplicates: one radiograph stored three times (same pixels, new SOP Instance UIDs) is one hit, not three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.duplicates import find_sets
from retrieval.summarize.cases import build_request
from tests.backends import free_port
from tests.conftest import SAMPLES, make_settings, running_process

MEDSEARCH = str(Path(sys.executable).parent / "medsearch")
RADIOGRAPH = "RG1_J2KI.dcm"


def store_copies(folder: Path, count: int = 2) -> list[Path]:
    """`count` copies of the sample radiograph with new SOP Instance UIDs (pixel data byte-identical)."""
    paths = []
    for n in range(count):
        ds = pydicom.dcmread(SAMPLES / RADIOGRAPH)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = folder / f"copy{n + 1}_{RADIOGRAPH}"
        ds.save_as(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def tripled(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A data folder with the 10 samples plus two copies of the radiograph (12 images, 10 distinct)."""
    root = tmp_path_factory.mktemp("dups")
    samples = root / "samples"
    samples.mkdir()
    for path in SAMPLES.glob("*.dcm"):
        (samples / path.name).write_bytes(path.read_bytes())
    store_copies(samples)
    collection = Collection(make_settings(root / "data", tiny_model))
    summary = run_index(collection, [samples], IndexOptions(workers=0, batch_size=8))
    assert summary.indexed == 12 and summary.failed == 0
    collection.close()
    return root


@pytest.fixture
def col(tripled: Path, tiny_model: Path) -> Collection:
    return Collection(make_settings(tripled / "data", tiny_model))


def radiograph_ids(col: Collection) -> list[int]:
    rows = col.catalog.images(col.catalog.all_ids().tolist())
    return sorted(i for i, row in rows.items() if row.source_uri.endswith(RADIOGRAPH))


def test_copies_fold_into_one_hit_that_counts_them(col: Collection, tripled: Path) -> None:
    copies = radiograph_ids(col)
    assert len(copies) == 3
    query = engine.embed_image(col, (SAMPLES / RADIOGRAPH).read_bytes())
    hits = engine.search(col, query, k=10)
    assert hits[0].image.id in copies and hits[0].duplicates == 2 and hits[0].score > 0.999
    assert [h.image.id for h in hits].count(hits[0].image.id) == 1
    assert not set(copies) & {h.image.id for h in hits[1:]}
    assert len(hits) == 10 and [h.rank for h in hits] == list(range(1, 11))  # k distinct images still come back
    assert sum(h.duplicates for h in hits) == 2
    shown = engine.search(col, query, k=10, show_duplicates=True)
    assert {h.image.id for h in shown[:3]} == set(copies) and all(h.score > 0.999 for h in shown[:3])
    assert all(h.duplicates == 0 for h in shown)
    pivot = engine.search(col, engine.embed_id(col, copies[0]), k=3)  # the other two copies fold into one hit
    assert pivot[0].image.id in copies[1:] and pivot[0].duplicates == 1


def test_copies_are_never_similar_cases_for_a_summary(col: Collection) -> None:
    copies = radiograph_ids(col)
    hits = engine.search(col, engine.embed_id(col, copies[0]), k=6, show_duplicates=True)
    request = build_request(col, [h.image.id for h in hits], limit=4, query_id=copies[0])
    compared = [m.image_id for m in request.matches]
    assert len(compared) == 4 and not set(compared) & set(copies)
    # an uploaded query: the hits' own scores tell which ones are the query itself
    upload = (SAMPLES / RADIOGRAPH).read_bytes()
    hits = engine.search(col, engine.embed_image(col, upload), k=6, show_duplicates=True)
    request = build_request(
        col, [h.image.id for h in hits], limit=4, query_bytes=upload, scores=[h.score for h in hits]
    )
    assert not {m.image_id for m in request.matches} & set(copies)


def test_find_sets_lists_the_one_set(col: Collection) -> None:
    index = col.index
    assert index is not None
    sets = find_sets(col.catalog, index, col.settings.duplicate_threshold)
    assert [s.ids for s in sets] == [radiograph_ids(col)]
    assert sets[0].min_cosine >= 0.9999
    assert find_sets(col.catalog, index, 1.01) == []  # a threshold no pair reaches


@pytest.mark.e2e
def test_cli_duplicates_and_show_duplicates(tripled: Path, tiny_model: Path) -> None:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(tripled / "data"), "MEDSEARCH_MODEL": str(tiny_model)}
    env["COLUMNS"] = "80"

    def medsearch(*args: str) -> str:
        proc = subprocess.run([MEDSEARCH, *args], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    listed = json.loads(medsearch("duplicates", "--json"))
    assert len(listed["sets"]) == 1 and len(listed["sets"][0]["ids"]) == 3
    assert all(s.endswith(RADIOGRAPH) for s in listed["sets"][0]["sources"])
    assert "1 sets of near-duplicates" in medsearch("duplicates")
    query = str(SAMPLES / RADIOGRAPH)
    folded = json.loads(medsearch("search", "--image", query, "-k", "3", "--json"))["hits"]
    assert folded[0]["duplicates"] == 2 and folded[1]["score"] < 0.999
    table = medsearch("search", "--image", query, "-k", "3")
    assert "copies" in table and "+2" in table
    everything = json.loads(medsearch("search", "--image", query, "-k", "3", "--show-duplicates", "--json"))["hits"]
    assert [h["duplicates"] for h in everything] == [0, 0, 0] and all(h["score"] > 0.999 for h in everything)


@pytest.mark.e2e
def test_api_show_duplicates_and_text_score(tripled: Path, tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(tripled / "data"), "MEDSEARCH_MODEL": str(tiny_model)}
    url = f"http://127.0.0.1:{port}"
    argv = [MEDSEARCH, "serve", "--host", "127.0.0.1", "--port", str(port)]
    with running_process(argv, env, f"{url}/readyz", tmp_path / "serve.log"):
        upload = (SAMPLES / RADIOGRAPH).read_bytes()
        files = {"file": (RADIOGRAPH, upload, "application/dicom")}
        answer = httpx.post(f"{url}/v1/search/image", files=files, data={"k": "3"}, timeout=60).json()
        folded = answer["hits"]
        assert answer["empty_reason"] is None
        assert folded[0]["duplicates"] == 2 and folded[1]["score"] < 0.999
        shown = httpx.post(
            f"{url}/v1/search/image", files=files, data={"k": "3", "show_duplicates": "true"}, timeout=60
        ).json()["hits"]
        assert [h["duplicates"] for h in shown] == [0, 0, 0] and all(h["score"] > 0.999 for h in shown)
        copies = [h["id"] for h in shown]
        none = httpx.post(f"{url}/v1/search/text", json={"text": "chest", "modality": ["XA"]}, timeout=60).json()
        assert none["hits"] == [] and "no image matches these filters: modality=XA" in none["empty_reason"]
        data = {"k": "3", "show_duplicates": "true", "text": "chest x-ray", "text_weight": "0.3"}
        both = httpx.post(f"{url}/v1/search/image", files=files, data=data, timeout=60).json()
        assert both["query"] == "image+text"
        assert all(h["duplicates"] == 0 for h in both["hits"])
        assert all(h["text_score"] is not None and 0 < h["text_score"] < 1 for h in both["hits"])
        # the text part's calibrated score is the one a text-only search gives the same image
        text_only = httpx.post(f"{url}/v1/search/text", json={"text": "chest x-ray", "k": 12, "show_duplicates": True})
        by_id = {h["id"]: h["text_score"] for h in text_only.json()["hits"]}
        for hit in both["hits"]:
            assert hit["text_score"] == pytest.approx(by_id[hit["id"]], abs=1e-4)
        pivot = httpx.get(f"{url}/v1/images/{copies[0]}/similar", params={"k": 2}, timeout=60).json()["hits"]
        assert pivot[0]["duplicates"] == 1
        pivot_all = httpx.get(
            f"{url}/v1/images/{copies[0]}/similar", params={"k": 2, "show_duplicates": "true"}, timeout=60
        ).json()["hits"]
        assert [h["duplicates"] for h in pivot_all] == [0, 0] and all(h["score"] > 0.999 for h in pivot_all)
