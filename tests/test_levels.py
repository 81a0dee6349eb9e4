"""Series and study levels: case vectors kept with the images, every query kind at every level, query by a case,
the maxsim re-ranking, the API and the migration of a collection indexed before the cases table."""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.config import ServiceSettings
from indexer.job import IndexOptions
from indexer.pipeline import run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import DecodeError, NotFoundError
from retrieval.feedback import feedback_query
from retrieval.query_cases import embed_case, embed_upload
from retrieval.query_levels import maxsim, maxsim_rerank, search_level_page
from retrieval.reports.imports import import_reports
from retrieval.store.cases import unit_mean
from retrieval.store.repo import Filters
from tests.conftest import make_settings, pydicom_roots
from tests.phantoms import CASE_SHAPES, PhantomSeries, write_studies

LEVELS = ("image", "series", "study")
Corpus = tuple[Path, dict[str, tuple[PhantomSeries, PhantomSeries]]]  # the folder, each shape's two studies
HIT_FIELDS = {"level", "series_instance_uid", "study_instance_uid", "score", "key_image_id", "sampled_image_ids"}
HIT_FIELDS |= {"slices_sampled", "slices_total", "modality", "body_part", "study_date"}


def real_mr_study() -> Path:
    """A real MR study of several series (pydicom's dicomdirtests: 98892003, MR700 and MR2)."""
    return next(root / "dicomdirtests" / "98892003" for root in pydicom_roots() if (root / "dicomdirtests").is_dir())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("cases")
    studies = write_studies(root / "phantoms", slices=6, shapes=CASE_SHAPES, localizer=False, moved=False)
    shutil.copytree(real_mr_study(), root / "mr")
    return root, studies


@pytest.fixture(scope="module")
def built(corpus: Corpus, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collection]:
    root, _ = corpus
    col = Collection(make_settings(tmp_path_factory.mktemp("data"), tiny_model))
    run_index(col, [root])
    col.save_index()
    yield col
    col.close()


def _stored(col: Collection, ids: list[int]) -> np.ndarray:
    vectors = col.catalog.vectors(ids)
    return np.stack([vectors[i] for i in ids])


def test_case_vectors_are_the_means_of_their_slices_and_series(built: Collection) -> None:
    cases = built.catalog.cases
    counts = cases.counts()
    series_uids = {img.series_instance_uid for img in built.catalog.images(built.catalog.all_ids().tolist()).values()}
    assert counts["series"] == len(series_uids) > 8
    assert built.case_indexes is not None
    assert built.case_indexes["series"].index.ntotal == counts["series"]
    assert built.case_indexes["study"].index.ntotal == counts["study"]
    mr = built.catalog.images(built.catalog.all_ids().tolist())
    study = next(img.study_instance_uid for img in mr.values() if img.modality == "MR")
    assert study is not None
    members = cases.member_ids("study", [study])[study]
    by_series: dict[str, list[int]] = {}
    for image_id in members:
        by_series.setdefault(str(mr[image_id].series_instance_uid), []).append(image_id)
    assert len(by_series) >= 2  # a real multi-series study
    series_vectors = []
    for uid, ids in by_series.items():
        found = cases.find("series", uid)
        assert found is not None
        expected = unit_mean(_stored(built, ids))
        np.testing.assert_allclose(found[1], expected, atol=1e-5)
        series_vectors.append(expected)
    study_case = cases.find("study", study)
    assert study_case is not None and study_case[0].series == len(by_series)
    # each series counts once, whatever its number of slices
    np.testing.assert_allclose(study_case[1], unit_mean(np.stack(series_vectors)), atol=1e-5)


def test_each_study_finds_its_reacquisition_first(built: Collection, corpus: Corpus) -> None:
    _, studies = corpus
    for first, again in studies.values():
        for query_uid, expected in ((first.study_uid, again.study_uid), (again.study_uid, first.study_uid)):
            query = embed_case(built, "study", query_uid)
            hits, _ = search_level_page(built, query, level="study", k=3)
            assert hits[0].image.study_instance_uid == expected
            assert query_uid not in {h.image.study_instance_uid for h in hits}  # never the query case itself
            reranked, _ = search_level_page(built, query, level="study", k=3, rerank="maxsim")
            assert reranked[0].image.study_instance_uid == expected


def test_a_case_hit_carries_its_key_slice_and_slices(built: Collection, corpus: Corpus) -> None:
    _, studies = corpus
    first, again = studies["cylinder"]
    query = engine.embed_id(built, built.catalog.ids_by_sop_uid(_sop(first.files[2]))[0])
    hits, total = search_level_page(built, query, level="series", k=20)
    assert total == built.catalog.cases.counts()["series"]
    assert first.series_uid not in {h.image.series_instance_uid for h in hits}  # the pivot's own series
    hit = next(h for h in hits if h.image.series_instance_uid == again.series_uid)
    row = hit.as_dict()
    assert set(row) >= HIT_FIELDS
    assert row["level"] == "series" and row["slices_sampled"] == row["slices_total"] == len(again.files)
    members = built.catalog.cases.member_ids("series", [again.series_uid])[again.series_uid]
    rows = built.catalog.images(members)
    positions = [rows[i].slice_position for i in row["sampled_image_ids"]]  # type: ignore[union-attr]
    assert sorted(row["sampled_image_ids"]) == sorted(members)
    assert None not in positions and positions == sorted(positions)  # in slice order, not in indexing order
    assert row["sampled_image_ids"] != sorted(members)  # the files were written shuffled: id order is not anatomy
    cosines = _stored(built, members) @ query.vector
    assert row["key_image_id"] == row["id"] == members[int(np.argmax(cosines))]
    assert row["modality"] == "CT" and row["body_part"] == "CHEST" and row["study_date"] == "2026-01-01"


def test_every_query_kind_at_every_level(built: Collection, tiny_model: Path) -> None:
    some = int(built.catalog.all_ids()[0])
    mr_series = next(
        img.series_instance_uid
        for img in built.catalog.images(built.catalog.all_ids().tolist()).values()
        if img.modality == "MR"
    )
    image = engine.embed_image(built, real_mr_study().joinpath("MR700", "4648").read_bytes())
    textq = engine.embed_text(built, "a sphere")
    queries = {
        "image": image,
        "text": textq,
        "image+text": engine.combine(image, textq, 0.5),
        "id": engine.embed_id(built, some),
        "feedback": feedback_query(built, [some]),
        "series": embed_case(built, "series", str(mr_series)),
    }
    for kind, query in queries.items():
        for level in LEVELS:
            hits, _ = search_level_page(built, query, level=level, k=4)  # type: ignore[arg-type]
            assert hits, (kind, level)
            assert {h.as_dict()["level"] for h in hits} == {level}
            if kind in ("text", "image+text"):
                assert all(h.text_score is not None for h in hits)
            if kind in ("id", "feedback"):
                assert some not in {h.image.id for h in hits}


def test_a_text_query_asks_the_case_indexes_for_more_lists(built: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """At series and study level too a text query visits TEXT_PROBE times the lists an image query does."""
    asked: list[float] = []
    indexes = built.case_indexes
    assert indexes is not None
    for level in ("series", "study"):
        index = indexes[level].index
        real = index.search

        def spy(query: Any, k: int, candidates: Any = None, probe: float = 1.0, _real: Any = real) -> Any:
            asked.append(probe)
            return _real(query, k, candidates, probe)

        monkeypatch.setattr(index, "search", spy)
    text = engine.embed_text(built, "a sphere")
    pivot = engine.embed_id(built, int(built.catalog.all_ids()[0]))
    for level in ("series", "study"):
        assert search_level_page(built, text, level=level, k=3)[0]
        assert search_level_page(built, pivot, level=level, k=3)[0]
    assert asked == [engine.TEXT_PROBE, 1.0, engine.TEXT_PROBE, 1.0] and engine.TEXT_PROBE > 1


def test_filters_admit_a_case_when_any_of_its_images_matches(built: Collection) -> None:
    query = engine.embed_text(built, "brain")
    hits, total = search_level_page(built, query, level="study", k=20, filters=Filters(modality=["MR"]))
    assert hits and {h.image.modality for h in hits} == {"MR"}
    assert total == len(hits)
    none, zero = search_level_page(built, query, level="series", k=5, filters=Filters(modality=["XA"]))
    assert none == [] and zero == 0


def test_every_filter_at_series_and_study_level_keeps_the_cases_holding_an_admitted_image(
    built: Collection, corpus: tuple[Path, dict[str, tuple[PhantomSeries, PhantomSeries]]], tmp_path: Path
) -> None:
    """Each filter the image level has, at series and study level: exactly the cases holding an image the same
    filter admits at the image level (label and report set on one slice / one study for the test)."""
    _, studies = corpus
    ring, _ = studies["ring"]
    images = built.catalog.images(built.catalog.all_ids().tolist())
    labelled_slice = built.catalog.ids_by_sop_uid(_sop(studies["cylinder"][0].files[1]))[0]
    mr_study = next(str(im.study_instance_uid) for im in images.values() if im.modality == "MR")
    reports = tmp_path / "reports.csv"
    reports.write_text(f"study_instance_uid,report\n{mr_study},a small round lesion in the left lobe\n")
    assert import_reports(built, reports).stored == 1
    labelled = str(images[labelled_slice].sop_instance_uid)
    built.catalog.apply_labels({labelled: ("nodule", None)}, {})
    query = engine.embed_image(built, ring.files[0].read_bytes())  # an upload: its case is a hit unless excluded
    assert query.patient_hash and query.study_uid == ring.study_uid and not query.exclude_ids
    cases = {
        "modality": (Filters(modality=["MR"]), {}),
        "body_part": (Filters(body_part=["CHEST"]), {}),
        "dates": (Filters(date_from=date(2003, 1, 1), date_to=date(2003, 12, 31)), {}),
        "label": (Filters(label="nodule"), {}),
        "report": (Filters(report="lesion"), {}),
        "exclude_same_patient": (Filters(), {"exclude_same_patient": True}),
        "exclude_same_study": (Filters(), {"exclude_same_study": True}),
    }
    try:
        for name, (filters, flags) in cases.items():
            image_level = Filters(**vars(filters))
            if flags.get("exclude_same_patient"):
                image_level.exclude_patient_hash = query.patient_hash
            if flags.get("exclude_same_study"):
                image_level.exclude_study_uid = query.study_uid
            admitted = built.catalog.candidate_ids(image_level)
            assert admitted is not None and 0 < len(admitted) < len(images), name  # the filter filters
            for level in ("series", "study"):
                own = {_case_uid(images[i], level) for i in query.exclude_ids}  # the query's cases: never hits
                expected = {_case_uid(images[int(i)], level) for i in admitted} - own
                given = Filters(**vars(filters))
                hits, total = search_level_page(built, query, level=level, k=50, filters=given, **flags)  # type: ignore[arg-type]
                assert {_case_uid(h.image, level) for h in hits} == expected, (name, level)
                assert total >= len(expected) and hits, (name, level)
    finally:
        built.catalog.apply_labels({labelled: (None, None)}, {})


def _case_uid(image: Any, level: str) -> str:
    return str(image.series_instance_uid if level == "series" else image.study_instance_uid)


def test_an_unknown_case_is_not_found(built: Collection) -> None:
    with pytest.raises(NotFoundError, match="no indexed study"):
        embed_case(built, "study", "1.2.3.404")


def test_an_uploaded_case_is_embedded_like_the_indexed_one(built: Collection, corpus: Corpus) -> None:
    _, studies = corpus
    first, again = studies["ring"]
    query = embed_upload(built, [p.read_bytes() for p in first.files])
    stored = built.catalog.cases.find("series", first.series_uid)
    assert stored is not None
    np.testing.assert_allclose(query.vector, stored[1], atol=1e-4)
    assert query.slices is not None and len(query.slices) == len(first.files)
    hits, _ = search_level_page(built, query, level="series", k=2)
    assert {h.image.series_instance_uid for h in hits} == {first.series_uid, again.series_uid}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in first.files:
            archive.write(path, f"series/{path.name}")
    zipped = embed_upload(built, [buffer.getvalue()])
    np.testing.assert_allclose(zipped.vector, query.vector, atol=1e-5)
    with pytest.raises(DecodeError, match="file 1 of the case"):
        embed_upload(built, [b"not an image at all"])


def test_maxsim_is_the_mean_best_cosine_and_reorders_the_centroid_ranking() -> None:
    q = np.eye(3, dtype=np.float32)[:2]  # two query slices: e0, e1
    close = np.eye(3, dtype=np.float32)[:2]  # holds both
    blurred = unit_mean(np.eye(3, dtype=np.float32)[:2]).reshape(1, -1)  # one slice between them
    assert maxsim(q, close) == pytest.approx(1.0)
    assert maxsim(q, blurred) == pytest.approx(float(np.sqrt(0.5)))
    ranked = maxsim_rerank(q, [(7, 0.99), (8, 0.5)], {7: blurred, 8: close})
    assert [case for case, _ in ranked] == [8, 7]


@pytest.mark.slow  # three indexing runs (10 s)
def test_a_growing_series_updates_its_vector_and_indexes(tmp_path: Path, tiny_model: Path) -> None:
    studies = write_studies(tmp_path / "in", slices=6, shapes=CASE_SHAPES, localizer=False, moved=False)
    first, _ = studies["bar"]
    part = tmp_path / "part"
    part.mkdir()
    for path in first.files[:3]:
        shutil.copy(path, part / path.name)
    settings = make_settings(tmp_path / "data", tiny_model)
    with Collection(settings) as col:
        run_index(col, [part])
        case, before = col.catalog.cases.find("series", first.series_uid) or pytest.fail("no series case")
        for path in first.files[3:]:
            shutil.copy(path, part / path.name)
        run_index(col, [part])
        col.save_index()
        grown, after = col.catalog.cases.find("series", first.series_uid) or pytest.fail("no series case")
        assert grown.id == case.id and grown.images == 6 and case.images == 3  # same id, new vector
        assert not np.allclose(before, after)
        ids = col.catalog.cases.member_ids("series", [first.series_uid])[first.series_uid]
        np.testing.assert_allclose(after, unit_mean(_stored(col, ids)), atol=1e-5)
        assert col.case_indexes is not None
        scores, found = col.case_indexes["series"].index.search(after, 1)
        assert int(found[0][0]) == grown.id and scores[0][0] == pytest.approx(1.0, abs=1e-4)
        removed = col.catalog.remove(ids[:4])
        assert removed == 4
        col.case_indexes.catch_up()
        left, vector = col.catalog.cases.find("series", first.series_uid) or pytest.fail("no series case")
        assert left.images == 2
    # reopened: the saved index file plus the revision it holds, caught up with the removal made after the save
    with Collection(settings) as col:
        assert col.case_indexes is not None
        scores, found = col.case_indexes["series"].index.search(vector, 1)
        assert int(found[0][0]) == left.id and scores[0][0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow  # a collection built, migrated down and up
def test_migration_fills_the_cases_of_a_collection_indexed_before_them(tmp_path: Path, tiny_model: Path) -> None:
    """A collection as 0005 left it (no cases table, no case index files) gets its series and study vectors
    from the stored slice vectors when it is opened: the encoder is never loaded."""
    studies = write_studies(tmp_path / "in", slices=4, shapes=CASE_SHAPES, localizer=False, moved=False)
    settings = make_settings(tmp_path / "data", tiny_model)
    with Collection(settings) as col:
        run_index(col, [tmp_path / "in"])
        col.save_index()
        expected = {uid: vec.copy() for uid, vec in _all_series(col).items()}
        with col.engine.begin() as conn:  # back to revision 0005: what main's code made
            conn.execute(text("DROP TABLE cases"))
            conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    for name in ("series.faiss", "study.faiss", "series.revision", "study.revision"):
        (settings.data_dir / name).unlink(missing_ok=True)

    def no_model(_: Any) -> Any:
        raise AssertionError("the migration must not encode anything")

    with Collection(settings, encoder_factory=no_model) as col:
        assert col.case_indexes is not None
        got = _all_series(col)
        assert set(got) == set(expected) == {w.series_uid for pair in studies.values() for w in pair}
        for uid, vec in expected.items():
            np.testing.assert_allclose(got[uid], vec, atol=1e-6)
        assert col.case_indexes["study"].index.ntotal == 2 * len(studies)
        query = embed_case(col, "study", studies["corner"][0].study_uid)
        hits, _ = search_level_page(col, query, level="study", k=1)
        assert hits[0].image.study_instance_uid == studies["corner"][1].study_uid


def _all_series(col: Collection) -> dict[str, np.ndarray]:
    cases = col.catalog.cases
    ids = cases.all_ids("series").tolist()
    rows = cases.rows(ids)
    return {
        rows[i].uid: v for part_ids, vecs in cases.iter_vectors("series") for i, v in zip(part_ids, vecs, strict=False)
    }


def _sop(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# -- the API ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(built: Collection, tiny_model: Path) -> Iterator[TestClient]:
    built.save_index()
    settings = ServiceSettings(data_dir=built.settings.data_dir, model=str(tiny_model))
    with TestClient(create_app(settings)) as client:
        yield client


def test_api_levels_cases_and_uploads(api: TestClient, corpus: Corpus) -> None:
    _, studies = corpus
    first, again = studies["cylinder"]
    text_hits = api.post("/v1/search/text", json={"text": "a sphere", "level": "study", "k": 3})
    assert text_hits.status_code == 200, text_hits.text
    body = text_hits.json()
    assert body["level"] == "study" and {h["level"] for h in body["hits"]} == {"study"}
    assert set(body["hits"][0]) >= HIT_FIELDS and body["hits"][0]["text_score"] is not None
    by_study = api.get(f"/v1/studies/{first.study_uid}/similar", params={"k": 2})
    assert by_study.status_code == 200, by_study.text
    assert by_study.json()["query"] == "study"
    assert by_study.json()["hits"][0]["study_instance_uid"] == again.study_uid
    by_series = api.get(f"/v1/series/{first.series_uid}/similar", params={"rerank": "maxsim", "k": 2})
    assert by_series.json()["hits"][0]["series_instance_uid"] == again.series_uid
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in first.files]
    upload = api.post("/v1/search/case", files=files, data={"level": "study", "k": "2"})
    assert upload.status_code == 200, upload.text
    assert upload.json()["query"] == "case"
    assert {h["study_instance_uid"] for h in upload.json()["hits"]} == {first.study_uid, again.study_uid}
    pivot = api.get(f"/v1/images/{upload.json()['hits'][0]['key_image_id']}/similar", params={"level": "series"})
    assert pivot.status_code == 200 and pivot.json()["hits"][0]["level"] == "series"
    missing = api.get("/v1/series/1.2.3.404/similar")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    stats = api.get("/v1/stats").json()
    assert stats["series"] >= 10 and stats["studies"] >= 9
    assert stats["case_index_vectors"] == {"series": stats["series"], "study": stats["studies"]}


def test_an_uploaded_volume_is_sampled_like_an_indexed_one(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 19 item 6: an upload of a whole series embeds the K slices indexing samples (the localizer left
    out), so its vector is the indexed series' vector: 24 slices + a localizer uploaded, 6 embedded."""
    from tests.phantoms import volume, write_series

    series = write_series(tmp_path / "ct", volume("sphere", slices=24), shape="sphere")
    assert series.localizer is not None and len(series.files) == 25
    col = Collection(make_settings(tmp_path / "data", tiny_model, series_slices="6"))
    try:
        run_index(col, [tmp_path / "ct"], IndexOptions(workers=0, batch_size=8, series_slices=6))
        stored = col.catalog.cases.find("series", series.series_uid)
        assert (
            stored is not None
            and len(col.catalog.cases.member_ids("series", [series.series_uid])[series.series_uid]) == 6
        )
        query = embed_upload(col, [p.read_bytes() for p in series.files])
        assert query.slices is not None and len(query.slices) == 6
        np.testing.assert_allclose(query.vector, stored[1], atol=1e-4)
    finally:
        col.close()


def test_the_wide_table_shows_a_case_hits_descriptions() -> None:
    from rich.console import Console

    from retrieval.cli.tables import hits_table
    from retrieval.query import CaseInfo, Hit
    from retrieval.store.models import Image

    image = Image(id=7, source_uri="/in/a.dcm", modality="CT", frame=1, study_instance_uid="1.2")
    image.series_instance_uid, image.sop_instance_uid = "1.2.3", "1.2.3.4"
    case = CaseInfo("series", 7, [5, 7, 9], 40, 1, "AXIAL 5MM", "PHANTOM STUDY")
    console = Console(width=300, record=True)
    console.print(hits_table("1 similar series", [Hit(rank=1, image=image, score=0.9, case=case)], wide=True))
    text = console.export_text()
    assert "description" in text and "AXIAL 5MM · PHANTOM STUDY" in text and "3/40" in text
    console.print(hits_table("1 similar image", [Hit(rank=1, image=image, score=0.9)], wide=True))
    assert console.export_text().count("description") == 0  # image hits: no such column
