"""Every FAISS index type behind VectorIndex: filtered search stays exact, removals stay gone, reopen keeps type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.index.base import VectorIndex
from retrieval.store.models import Image
from retrieval.store.repo import Filters
from tests.conftest import make_settings

N = 600
TYPES = ["flat", "hnsw", "ivf-sq8", "ivf-fp16", "auto"]
MODALITIES = ["CT"] * 60 + ["MR"] * 30 + ["CR"] * 9 + ["NM"]  # NM: a 1 %-selective filter


def clustered(n: int, width: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Unit vectors around 12 random centres (nearest neighbours are close, as with real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, width))
    vecs = centres[rng.integers(0, 12, n)] + 0.6 * rng.standard_normal((n, width))
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


def fill(col: Collection, n: int = N, seed: int = 0) -> tuple[list[int], npt.NDArray[np.float32]]:
    """n images with metadata to filter on and clustered vectors, written to the store (one transaction)."""
    width = col.require_index().width
    vecs = clustered(n, width, seed)
    rows = [
        Image(
            instance_key=f"img-{seed}-{i}",
            kind="raster",
            source_uri=f"/synthetic/{seed}/{i}.png",
            content_hash=f"{seed}-{i}",
            modality=MODALITIES[i % len(MODALITIES)],
            body_part=["CHEST", "HEAD", "ABDOMEN"][i % 3],
            study_date=date(2020, 1, 1 + i % 28),
            label=f"label-{i % 7}",
            patient_hash=f"p{i % 50}",
            study_instance_uid=f"1.2.{i % 120}",
        )
        for i in range(n)
    ]
    ids = col.catalog.write_batch(list(zip(rows, vecs, strict=True)))
    return ids, vecs


def exact_reference(col: Collection, query: npt.NDArray[np.float32], k: int, filters: Filters) -> list[int]:
    """Exact filtered search from first principles: SQL candidates, stored vectors, numpy scores."""
    cand = col.catalog.candidate_ids(filters)
    pairs = list(col.catalog.iter_vectors(None if cand is None else cand.tolist()))
    ids = np.concatenate([p[0] for p in pairs if len(p[0])])
    vecs = np.concatenate([p[1] for p in pairs if len(p[0])])
    scores = vecs @ query
    order = np.lexsort((ids, -scores))[:k]
    return [int(i) for i in ids[order]]


def typed(tmp_path: Path, tiny_model: Path, index_type: str, **extra: object) -> Collection:
    extra.setdefault("index_auto_threshold", 100)
    return Collection(make_settings(tmp_path / f"data-{index_type}", tiny_model, index_type=index_type, **extra))


@pytest.fixture(params=TYPES)
def typed_collection(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path) -> Iterator[Collection]:
    col = typed(tmp_path, tiny_model, request.param)
    fill(col)
    col.require_index().rebuild(col.catalog)
    yield col
    col.close()


FILTERS = [
    Filters(modality=["NM"]),  # 6 of 600 images: 1 %
    Filters(modality=["CR"], body_part=["HEAD"]),
    Filters(label="label-3", date_from=date(2020, 1, 5), date_to=date(2020, 1, 20)),
    Filters(modality=["CT", "MR"]),
    Filters(exclude_patient_hash="p7"),
]


def hit_ids(hits: list[engine.Hit]) -> list[int]:
    return [h.image.id for h in hits]


def satisfies(image: Image, filters: Filters) -> bool:
    return (
        (not filters.modality or image.modality in filters.modality)
        and (not filters.body_part or image.body_part in filters.body_part)
        and (filters.label is None or image.label == filters.label)
        and (filters.date_from is None or (image.study_date is not None and image.study_date >= filters.date_from))
        and (filters.date_to is None or (image.study_date is not None and image.study_date <= filters.date_to))
        and (filters.exclude_patient_hash is None or image.patient_hash != filters.exclude_patient_hash)
    )


def test_filtered_search_is_exact_on_the_collection_fixture(collection: Collection) -> None:
    """Through the VectorIndex protocol only, on whatever backend the `collection` fixture provides."""
    fill(collection)
    index = collection.require_index()
    index.sync(collection.catalog)
    assert index.ntotal == N
    for filters in FILTERS:
        for query in clustered(4, index.width, seed=42):
            hits = engine.search(collection, engine.QueryVector(query, "image"), k=10, filters=filters)
            assert all(satisfies(h.image, filters) for h in hits)
            assert hit_ids(hits) == exact_reference(collection, query, 10, filters)


@pytest.mark.parametrize("k", [5, 10])
def test_filtered_search_equals_exact_for_every_type(typed_collection: Collection, k: int) -> None:
    col = typed_collection
    queries = clustered(8, col.require_index().width, seed=99)
    for filters in FILTERS:
        expected_count = len(col.catalog.candidate_ids(filters))  # type: ignore[arg-type]
        for query in queries:
            hits = engine.search(col, engine.QueryVector(query, "image"), k=k, filters=filters)
            assert all(satisfies(h.image, filters) for h in hits), filters
            assert len(hits) == min(k, expected_count), (filters, len(hits))
            assert hit_ids(hits) == exact_reference(col, query, k, filters), (filters, col.settings.index_type)


def test_one_percent_filter_returns_k_through_the_approximate_path(tmp_path: Path, tiny_model: Path) -> None:
    """With the exact shortcut off, ID selectors plus widening/fall-back still find all k matching images."""
    for index_type in ("hnsw", "ivf-sq8", "ivf-fp16"):
        col = typed(tmp_path, tiny_model, index_type, exact_filter_max=0, index_nprobe=1, index_ef_search=4)
        fill(col)
        index = col.require_index()
        index.rebuild(col.catalog)
        nm = Filters(modality=["NM"])
        for query in clustered(10, index.width, seed=5):
            hits = engine.search(col, engine.QueryVector(query, "image"), k=6, filters=nm)
            assert len(hits) == 6 and {h.image.modality for h in hits} == {"NM"}, index_type
            assert set(hit_ids(hits)) == set(exact_reference(col, query, 6, nm))
        col.close()


def test_approximate_filtered_results_satisfy_filters_and_mostly_agree(tmp_path: Path, tiny_model: Path) -> None:
    for index_type in ("hnsw", "ivf-sq8", "ivf-fp16"):
        col = typed(tmp_path, tiny_model, index_type, exact_filter_max=0)
        fill(col)
        col.require_index().rebuild(col.catalog)
        agree = total = 0
        for filters in FILTERS:
            for query in clustered(5, col.require_index().width, seed=11):
                hits = engine.search(col, engine.QueryVector(query, "image"), k=10, filters=filters)
                assert all(satisfies(h.image, filters) for h in hits)
                assert len(hits) == min(10, len(col.catalog.candidate_ids(filters)))  # type: ignore[arg-type]
                expected = exact_reference(col, query, 10, filters)
                agree += len(set(hit_ids(hits)) & set(expected))
                total += len(expected)
        assert agree / total >= 0.9, (index_type, agree / total)
        col.close()


def describe(index: VectorIndex) -> dict[str, object]:
    info = index.describe()  # type: ignore[attr-defined]
    return dict(info["params"])


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf-sq8", "ivf-fp16"])
@pytest.mark.parametrize("mmap", [False, True])
def test_reopen_keeps_type_and_params_and_removals_never_return(
    tmp_path: Path, tiny_model: Path, index_type: str, mmap: bool
) -> None:
    col = typed(tmp_path, tiny_model, index_type, index_nlist=6, index_nprobe=3, index_hnsw_m=12, index_mmap=mmap)
    ids, vecs = fill(col)
    index = col.require_index()
    index.rebuild(col.catalog)
    params = describe(index)
    assert params["type"] == index_type
    col.save_index()
    sidecar = json.loads(col.settings.index_path.with_name("index.faiss.json").read_text())
    assert sidecar["params"] == params and sidecar["vectors"] == N
    col.close()

    col = typed(tmp_path, tiny_model, index_type, index_mmap=mmap)
    index = col.require_index()
    assert col.reconcile_report is not None and col.reconcile_report.loaded and not col.reconcile_report.rebuilt
    assert describe(index) == params and index.ntotal == N
    assert index.describe()["memory_mapped"] is mmap  # type: ignore[attr-defined]
    # remove 30 % (HNSW masks them, then compacts past 20 %): none may ever come back, even as its own query
    gone = ids[: N * 3 // 10]
    col.catalog.remove(gone)
    assert index.remove(np.asarray(gone[:10], np.int64)) == 10
    assert index.describe()["masked_removed"] == (10 if index_type == "hnsw" else 0)  # type: ignore[attr-defined]
    for i in range(10):  # each removed image's own vector as the query: it would be its own best match
        _, found = index.search(vecs[i], 5)
        assert not set(found[0].tolist()) & set(gone[:10])
        hits = engine.search(col, engine.QueryVector(vecs[i], "image"), k=5, filters=Filters(body_part=["CHEST"]))
        assert len(hits) == 5 and not set(hit_ids(hits)) & set(gone[:10])
    assert index.remove(np.asarray(gone, np.int64)) == len(gone) - 10
    assert index.describe()["masked_removed"] == 0  # type: ignore[attr-defined]  # HNSW compacted past 20 %
    assert index.ntotal == N - len(gone)
    for i in range(0, len(gone), 20):
        _, found = index.search(vecs[i], 10)
        assert not set(found[0].tolist()) & set(gone)
        hits = engine.search(col, engine.QueryVector(vecs[i], "image"), k=10, filters=Filters(modality=["CT"]))
        assert len(hits) == 10 and not set(hit_ids(hits)) & set(gone)
    # new images added after the removals are found (the mapped file was copied into memory first)
    new_ids, new_vecs = fill(col, 40, seed=1)
    index.add(np.asarray(new_ids, np.int64), new_vecs)
    _, found = index.search(new_vecs[0], 1)
    assert int(found[0][0]) == new_ids[0]
    col.save_index()
    col.close()

    col = typed(tmp_path, tiny_model, index_type)
    index = col.require_index()
    assert col.reconcile_report is not None and col.reconcile_report.added == col.reconcile_report.removed == 0
    assert set(index.ids().tolist()) == set(col.catalog.all_ids().tolist())
    col.close()


@pytest.mark.parametrize("index_type", ["hnsw", "ivf-sq8"])
def test_reconcile_drops_images_removed_behind_the_index(tmp_path: Path, tiny_model: Path, index_type: str) -> None:
    """Another process removed images and never saved the index: opening masks or deletes them."""
    col = typed(tmp_path, tiny_model, index_type)
    ids, vecs = fill(col)
    col.require_index().rebuild(col.catalog)
    col.save_index()
    col.catalog.remove(ids[:5])
    col.close()
    col = typed(tmp_path, tiny_model, index_type)
    assert col.reconcile_report is not None and col.reconcile_report.removed == 5
    _, found = col.require_index().search(vecs[0], 5)
    assert ids[0] not in found[0].tolist()
    col.close()


def test_auto_picks_exact_below_the_threshold_and_ivf_above(tmp_path: Path, tiny_model: Path) -> None:
    small = typed(tmp_path / "small", tiny_model, "auto", index_auto_threshold=1000)
    fill(small)
    small.require_index().rebuild(small.catalog)
    assert describe(small.require_index())["type"] == "flat"
    big = typed(tmp_path / "big", tiny_model, "auto", index_auto_threshold=500)
    fill(big)
    big.require_index().rebuild(big.catalog)
    params = describe(big.require_index())
    assert params["type"] == "ivf-sq8" and params["nlist"] == 9 and params["nprobe"] == 8  # 600 vectors
    small.close()
    big.close()


def test_auto_index_switches_to_ivf_once_the_collection_outgrows_exact(tmp_path: Path, tiny_model: Path) -> None:
    col = typed(tmp_path, tiny_model, "auto", index_auto_threshold=500)
    index = col.require_index()
    assert describe(index)["type"] == "flat"  # empty collection
    ids, vecs = fill(col, 300)
    index.add(np.asarray(ids, np.int64), vecs)
    col.save_index()
    assert describe(index)["type"] == "flat"  # 300 < 500
    more, more_vecs = fill(col, 300, seed=1)
    index.add(np.asarray(more, np.int64), more_vecs)
    col.save_index()  # what the indexer does every MEDSEARCH_INDEX_SAVE_SECONDS and at the end
    assert describe(index)["type"] == "ivf-sq8" and index.ntotal == 600
    col.close()
    col = typed(tmp_path, tiny_model, "auto", index_auto_threshold=500)
    assert describe(col.require_index())["type"] == "ivf-sq8" and col.require_index().ntotal == 600
    col.close()
