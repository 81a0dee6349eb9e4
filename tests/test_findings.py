"""Zero-shot tags and few-shot probes on real DICOMs with the stand-in model: stored numbers, filters, index time."""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom.data
import pytest
from sqlalchemy import select, update

from indexer.pipeline import IndexOptions, run_index
from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.errors import MedsearchError
from retrieval.findings.errors import (
    BadTrainingSetError,
    ConflictingLabelsError,
    OtherModelError,
    TooFewExamplesError,
    UnknownTagError,
)
from retrieval.findings.probes import (
    apply_probe,
    list_probes,
    rank_probe,
    remove_probe,
    train_probe,
    training_set_from_file,
    training_set_from_ids,
)
from retrieval.findings.tags import TagSpec, apply_tags, list_tags, remove_tags
from retrieval.store.models import Image, Probe, ProbeScore, Tag, TagScore
from retrieval.store.repo import Filters
from tests.conftest import make_settings

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
PROMPTS = [
    TagSpec("mr", "an MR image of the head"),
    TagSpec("ct", "a CT slice"),
    TagSpec("us", "an ultrasound image", 0.4),
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Collection]:
    """pydicom's own test files indexed with the stand-in model (about 68 images: MR, CT, US, CR, NM, ...)."""
    collection = Collection(make_settings(tmp_path_factory.mktemp("findings"), tiny_model))
    run_index(collection, [PYDICOM_FILES], IndexOptions(workers=0, batch_size=16))
    yield collection
    collection.close()


def _stored(collection: Collection) -> tuple[list[int], npt.NDArray[np.float32]]:
    ids, vectors = [], []
    for part_ids, part in collection.catalog.iter_vectors():
        ids += part_ids.tolist()
        vectors.append(part)
    return ids, np.concatenate(vectors)


def _images(collection: Collection) -> list[Image]:
    with collection.catalog.sessions() as session:
        return list(session.scalars(select(Image).order_by(Image.id)))


@functools.cache
def _logit_parameters(model_dir: str) -> tuple[float, float]:
    """exp(logit_scale) and logit_bias of the saved model (whatever back end the collection encodes with)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    return float(model.logit_scale.detach().double().exp()), float(model.logit_bias.detach().double())


def _calibrated(collection: Collection, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """sigmoid(cos * exp(logit_scale) + logit_bias), with the numbers read from the model itself."""
    scale, bias = _logit_parameters(collection.settings.model)
    return 1.0 / (1.0 + np.exp(-(cosines.astype(np.float64) * scale + bias)))


def _tag_table(collection: Collection) -> dict[tuple[str, int], float]:
    with collection.catalog.sessions() as session:
        return {(r.tag, r.image_id): r.score for r in session.scalars(select(TagScore))}


def _probe_table(collection: Collection, name: str) -> dict[int, tuple[int, float]]:
    with collection.catalog.sessions() as session:
        rows = session.scalars(select(ProbeScore).where(ProbeScore.probe == name))
        return {r.image_id: (r.version, r.probability) for r in rows}


def _mr_labels(collection: Collection, path: Path, per_class: int) -> list[int]:
    """A labels CSV (path, label = modality) of `per_class` MR and as many other images; returns their ids."""
    images = [i for i in _images(collection) if i.modality]
    mr = [i for i in images if i.modality == "MR"][:per_class]
    rows = mr + [i for i in images if i.modality != "MR"][:per_class]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for image in rows:
            writer.writerow([image.source_uri, image.modality])
    return [i.id for i in rows]


def test_tag_scores_are_the_calibrated_probability_of_every_stored_vector(archive: Collection) -> None:
    report = apply_tags(archive, PROMPTS, chunk=16)  # several chunks
    ids, vectors = _stored(archive)
    assert report.images == len(ids) > 50
    prompts = archive.load_encoder().encode_texts([p.prompt for p in PROMPTS])
    expected = _calibrated(archive, vectors @ prompts.T)
    table = _tag_table(archive)
    assert len(table) == len(ids) * len(PROMPTS)
    for column, spec in enumerate(PROMPTS):
        stored = np.asarray([table[(spec.tag, i)] for i in ids])
        np.testing.assert_allclose(stored, expected[:, column], rtol=0, atol=1e-6)
    infos = {i.tag: i for i in list_tags(archive)}
    for column, spec in enumerate(PROMPTS):
        assert infos[spec.tag].images == int(np.sum(expected[:, column] >= spec.threshold))
        assert infos[spec.tag].threshold == spec.threshold and infos[spec.tag].prompt == spec.prompt


def test_tag_filter_returns_only_tagged_images_and_k_of_them(archive: Collection) -> None:
    apply_tags(archive, PROMPTS)
    table = _tag_table(archive)
    ids = sorted({i for _, i in table})
    # re-apply with each tag's threshold at its median: about half of the images have each tag
    medians = {s.tag: float(np.median([table[(s.tag, i)] for i in ids])) for s in PROMPTS}
    apply_tags(archive, [TagSpec(s.tag, s.prompt, medians[s.tag]) for s in PROMPTS])
    query = engine.embed_text(archive, "a medical image")
    for spec in PROMPTS:
        tagged = {i for i in ids if table[(spec.tag, i)] >= medians[spec.tag]}
        assert 0 < len(tagged) < len(ids)
        for k in (3, len(tagged), len(tagged) + 5):
            hits = engine.search(archive, query, k=k, filters=Filters(tags=[spec.tag]), show_duplicates=True)
            assert {h.image.id for h in hits} <= tagged
            assert len(hits) == min(k, len(tagged))
            for hit in hits:
                assert hit.tags[spec.tag] == pytest.approx(table[(spec.tag, hit.image.id)], abs=1e-6)
    both = {i for i in ids if all(table[(s.tag, i)] >= medians[s.tag] for s in PROMPTS[:2])}
    hits = engine.search(archive, query, k=100, filters=Filters(tags=["mr", "ct"]), show_duplicates=True)
    assert {h.image.id for h in hits} == both
    with pytest.raises(UnknownTagError, match="no tag named nope"):
        engine.search(archive, query, k=3, filters=Filters(tags=["nope"]))


def test_probe_probabilities_equal_the_logistic_regression_on_stored_vectors(
    archive: Collection, tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    labels = tmp_path / "mr.csv"
    training_ids = _mr_labels(archive, labels, 6)
    training = training_set_from_file(archive, labels, positive="MR")
    assert training.ids == sorted(training_ids) and sum(training.y) == 6
    info = train_probe(archive, "mr-probe", training)
    assert (info.positives, info.negatives, info.folds) == (6, 6, 5) and 0.0 <= info.cv_auc <= 1.0
    assert not info.applied
    applied, report = apply_probe(archive, "mr-probe", chunk=16)
    assert applied.applied and applied.version == info.version
    ids, vectors = _stored(archive)
    assert report.images == len(ids)
    with archive.catalog.sessions() as session:
        probe = session.scalars(select(Probe).where(Probe.name == "mr-probe")).one()
    coef = np.frombuffer(probe.coef, dtype=np.float64)
    expected = 1.0 / (1.0 + np.exp(-(vectors.astype(np.float64) @ coef + probe.intercept)))
    table = _probe_table(archive, "mr-probe")
    stored = np.asarray([table[i][1] for i in ids])
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-6)
    # and it is scikit-learn's own model: the same fit gives the same probabilities
    x = vectors[[ids.index(i) for i in training.ids]]
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, training.y)
    np.testing.assert_allclose(stored, model.predict_proba(vectors)[:, 1], rtol=0, atol=1e-6)


def test_probe_filter_and_rank(archive: Collection, tmp_path: Path) -> None:
    labels = tmp_path / "mr.csv"
    _mr_labels(archive, labels, 5)
    train_probe(archive, "mr-rank", training_set_from_file(archive, labels, positive="MR"))
    apply_probe(archive, "mr-rank")
    table = _probe_table(archive, "mr-rank")
    query = engine.embed_text(archive, "a medical image")
    for least in (0.2, 0.5, float(np.median([p for _, p in table.values()]))):
        likely = {i for i, (_, p) in table.items() if p >= least}
        for k in (1, max(1, len(likely)), len(likely) + 3):
            hits = engine.search(
                archive, query, k=k, filters=Filters(probe="mr-rank", min_prob=least), show_duplicates=True
            )
            assert {h.image.id for h in hits} <= likely and len(hits) == min(k, len(likely))
            assert all(h.probes["mr-rank"] == pytest.approx(table[h.image.id][1], abs=1e-6) for h in hits)
    info, ranked = rank_probe(archive, "mr-rank", 5)
    assert info.version == 1 and info.applied
    examples = set(training_set_from_file(archive, labels, positive="MR").ids)
    outside = sorted(((p, i) for i, (_, p) in table.items() if i not in examples), key=lambda t: (-t[0], t[1]))
    assert [img.id for img, _ in ranked] == [i for _, i in outside[:5]]
    assert [p for _, p in ranked] == pytest.approx([p for p, _ in outside[:5]], abs=1e-9)
    assert not examples & {img.id for img, _ in ranked}


def test_a_new_version_replaces_the_applied_one(archive: Collection) -> None:
    mr = [i.id for i in _images(archive) if i.modality == "MR"][:4]
    ct = [i.id for i in _images(archive) if i.modality == "CT"][:4]
    first = train_probe(archive, "versions", training_set_from_ids(mr, ct))
    apply_probe(archive, "versions")
    second = train_probe(archive, "versions", training_set_from_ids(mr[:3], ct))
    assert (first.version, second.version) == (1, 2)
    assert {v for v, _ in _probe_table(archive, "versions").values()} == {1}  # v2 is not applied yet
    apply_probe(archive, "versions")
    assert {v for v, _ in _probe_table(archive, "versions").values()} == {2}
    assert [(p.version, p.applied) for p in list_probes(archive) if p.name == "versions"] == [(1, True), (2, True)]
    assert remove_probe(archive, "versions") == 2
    assert _probe_table(archive, "versions") == {}
    with pytest.raises(MedsearchError) as caught:
        remove_probe(archive, "versions")
    assert caught.value.code == "unknown_probe" and caught.value.status == 404


def test_too_few_examples_and_unusable_labels_are_refused(archive: Collection, tmp_path: Path) -> None:
    mr = [i.id for i in _images(archive) if i.modality == "MR"]
    ct = [i.id for i in _images(archive) if i.modality == "CT"]
    with pytest.raises(TooFewExamplesError, match="got 2 positive and 5 negative") as caught:
        train_probe(archive, "few", training_set_from_ids(mr[:2], ct[:5]))
    assert (caught.value.code, caught.value.status, caught.value.title) == (
        "too_few_examples",
        400,
        "Too few examples of a class",
    )
    with pytest.raises(ConflictingLabelsError, match="both positive and negative"):
        training_set_from_ids(mr[:3], mr[2:5])
    labels = tmp_path / "mr.csv"
    _mr_labels(archive, labels, 4)
    with pytest.raises(BadTrainingSetError, match="--positive"):
        training_set_from_file(archive, labels)  # class names, no positive class named
    with pytest.raises(BadTrainingSetError, match="no row has the label 'XA'"):
        training_set_from_file(archive, labels, positive="XA")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("id,label\n999999,1\n1,0\n")
    with pytest.raises(BadTrainingSetError, match="name no indexed image"):
        training_set_from_file(archive, unknown)
    assert "few" not in {p.name for p in list_probes(archive)}


def test_a_probe_or_tag_of_another_model_is_refused(archive: Collection) -> None:
    mr = [i.id for i in _images(archive) if i.modality == "MR"][:4]
    ct = [i.id for i in _images(archive) if i.modality == "CT"][:4]
    train_probe(archive, "foreign", training_set_from_ids(mr, ct))
    apply_probe(archive, "foreign")
    with archive.catalog.sessions() as session, session.begin():
        session.execute(update(Probe).where(Probe.name == "foreign").values(fingerprint="0123456789ab-other-model"))
    with pytest.raises(OtherModelError, match="0123456789ab-other-model") as caught:
        apply_probe(archive, "foreign")
    assert (caught.value.code, caught.value.status) == ("other_model", 409)
    with pytest.raises(OtherModelError):
        rank_probe(archive, "foreign", 3)
    query = engine.embed_text(archive, "x")
    with pytest.raises(OtherModelError, match="was made with model fingerprint 0123456789ab-other-model"):
        engine.search(archive, query, k=3, filters=Filters(probe="foreign"))
    # a tag made with another model is not used for new images (hook) and is listed as it is
    apply_tags(archive, [TagSpec("foreign-tag", "anything")])
    with archive.catalog.sessions() as session, session.begin():
        session.execute(update(Tag).where(Tag.name == "foreign-tag").values(fingerprint="other"))
    from retrieval.findings.tags import usable_tags

    assert "foreign-tag" not in {t.name for t in usable_tags(archive)}
    remove_tags(archive, ["foreign-tag"])
    remove_probe(archive, "foreign")


def test_new_images_are_scored_as_they_are_indexed(tmp_path: Path, tiny_model: Path, sample_dir: Path) -> None:
    collection = Collection(make_settings(tmp_path / "data", tiny_model))
    try:
        first = sorted(sample_dir.glob("*.dcm"))
        held_back = tmp_path / "later"
        held_back.mkdir()
        for path in first[6:]:
            path.rename(held_back / path.name)
        run_index(collection, [sample_dir], IndexOptions(workers=0))
        before = {i.id for i in _images(collection)}
        apply_tags(collection, PROMPTS)
        train_probe(collection, "p", training_set_from_ids(sorted(before)[:3], sorted(before)[3:6]))
        apply_probe(collection, "p")
        run_index(collection, [held_back], IndexOptions(workers=0))
        ids, vectors = _stored(collection)
        new = [i for i in ids if i not in before]
        assert len(new) == 4
        rows = [ids.index(i) for i in new]
        tags = _tag_table(collection)
        prompts = collection.load_encoder().encode_texts([p.prompt for p in PROMPTS])
        expected = _calibrated(collection, vectors[rows] @ prompts.T)
        for column, spec in enumerate(PROMPTS):
            np.testing.assert_allclose([tags[(spec.tag, i)] for i in new], expected[:, column], atol=1e-6, rtol=0)
        with collection.catalog.sessions() as session:
            probe = session.scalars(select(Probe)).one()
        coef = np.frombuffer(probe.coef, dtype=np.float64)
        probabilities = 1.0 / (1.0 + np.exp(-(vectors[rows].astype(np.float64) @ coef + probe.intercept)))
        table = _probe_table(collection, "p")
        np.testing.assert_allclose([table[i][1] for i in new], probabilities, atol=1e-6, rtol=0)
        # removing an image removes its scores (the database cascades)
        collection.catalog.remove([new[0]])
        assert new[0] not in _probe_table(collection, "p") and all(i != new[0] for _, i in _tag_table(collection))
    finally:
        collection.close()
