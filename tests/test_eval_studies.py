"""`medsearch eval` with labels keyed by StudyInstanceUID: study vectors, hand-checked metrics, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from retrieval.errors import LabelsFileError
from retrieval.eval_studies import LabelledStudy, StudySet, evaluate_studies, study_vectors
from tests.commands import run
from tests.conftest import testdata_file


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _study_set(images: list[tuple[str, str, str | None, np.ndarray]]) -> StudySet:
    """(study uid, label, patient, vector) per image, in image id order."""
    studies: dict[str, LabelledStudy] = {}
    for image_id, (uid, label, patient, _) in enumerate(images):
        studies.setdefault(uid, LabelledStudy(uid, label, patient)).image_ids.append(image_id)
    return StudySet(
        studies=list(studies.values()),
        vectors=np.stack([v for *_, v in images]),
        labels=[label for _, label, _, _ in images],
        groups=[patient or uid for uid, _, patient, _ in images],
        sources=[f"/f{i}" for i in range(len(images))],
        image_ids=list(range(len(images))),
        missing=[],
    )


def test_a_study_vector_is_the_unit_mean_of_its_images() -> None:
    images = [("S1", "a", None, _unit(1, 0, 0)), ("S2", "b", None, _unit(0, 0, 1)), ("S1", "a", None, _unit(0, 1, 0))]
    vectors = study_vectors(_study_set(images))
    np.testing.assert_allclose(vectors[0], _unit(1, 1, 0), atol=1e-6)  # images 0 and 2, not 0 and 1
    np.testing.assert_allclose(vectors[1], _unit(0, 0, 1), atol=1e-6)


def test_study_level_metrics_by_hand() -> None:
    # S1, S2 (a) and S3, S4 (b). S1's mean points to S2; S3's images average to a vector nearest S1;
    # S4 belongs to S3's patient, so S3 and S4 never retrieve each other.
    images = [
        ("S1", "a", "P1", _unit(1, 0, 0)),
        ("S1", "a", "P1", _unit(1, 0.2, 0)),
        ("S2", "a", "P2", _unit(1, 0.1, 0)),
        ("S3", "b", "P3", _unit(1, 0, 0.2)),
        ("S3", "b", "P3", _unit(0.8, 0, 0.4)),
        ("S4", "b", "P3", _unit(0, 0, 1)),
    ]
    report = evaluate_studies(_study_set(images), k=1)
    # S1 -> S2 (a: hit); S2 -> S1 (hit); S3 -> S1 or S2 (its own patient's S4 excluded: miss, 0 relevant left
    # -> skipped); S4 -> the same (skipped). So 2 scored queries, both P@1 = 1.
    assert [q.ranking[:1] for q in report.queries[:2]] == [[1], [0]]
    assert (report.images, report.scored, report.skipped) == (4, 2, 2)
    assert (report.precision, report.map) == (1.0, 1.0)
    assert report.per_label["b"].scored == 0


def _write_study(folder: Path, source: Path, label: str, copies: int, patient: str) -> str:
    """`copies` instances of one real image as one new study (its own UIDs): returns the StudyInstanceUID."""
    study = generate_uid()
    series = generate_uid()
    for n in range(copies):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = patient
        ds.InstanceNumber = n + 1
        ds.save_as(folder / f"{label}-{study[-8:]}-{n}.dcm")
    return study


@pytest.mark.e2e  # the real `medsearch eval` command (31 s)
def test_eval_cli_reports_study_level_next_to_image_level(tmp_path: Path, cli_env: dict[str, str]) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    rows = []
    for label, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        for patient in ("P1" if label == "ct" else "P3", "P2" if label == "ct" else "P4"):
            rows.append((_write_study(folder, testdata_file(name), label, 2, patient), label))
    run(["index", str(folder), "--json"], cli_env)
    labels = tmp_path / "studies.csv"
    unknown = generate_uid()
    labels.write_text("study,label\n" + "".join(f"{uid},{label}\n" for uid, label in [*rows, (unknown, "mr")]))
    report = json.loads(run(["eval", "--labels", str(labels), "-k", "1", "--json"], cli_env).stdout)
    # image level: 8 images, each finding an identical copy from the other study of its label (its own study's
    # copies are the same patient: excluded)
    assert (report["images"], report["from_index"], report["scored_queries"]) == (8, 8, 8)
    assert report["precision_at_k"] == 1.0
    study = report["study_level"]
    assert (study["studies"], study["scored_queries"], study["missing_studies"]) == (4, 4, [unknown])
    assert (study["precision_at_k"], study["map_at_k"]) == (1.0, 1.0)
    by_study = {q["study"]: q for q in study["queries"]}
    (ct1, _), (ct2, _), (mr1, _), (mr2, _) = rows
    assert by_study[ct1]["top_k"] == [ct2] and by_study[mr2]["top_k"] == [mr1]
    assert by_study[ct1]["images"] == 2
    shown = run(["eval", "--labels", str(labels), "-k", "1"], cli_env).stdout
    assert "study level: 4 labelled studies" in shown and "1 labelled studies are not indexed" in shown


def test_study_labels_need_indexed_studies(tmp_path: Path, cli_env: dict[str, str]) -> None:
    labels = tmp_path / "none.csv"
    labels.write_text("study,label\n1.2.3,a\n1.2.4,b\n1.2.5,a\n")
    failed = run(["eval", "--labels", str(labels)], cli_env, check=False)
    assert failed.returncode == 1 and "only 0 of the 3 labelled studies are indexed" in failed.stderr


def test_a_study_labelled_twice_differently_is_refused(tmp_path: Path) -> None:
    from retrieval.eval_studies import read_study_labels
    from retrieval.labels import read_labels_table

    labels = tmp_path / "twice.csv"
    labels.write_text("study,label\n1.2.3,a\n1.2.3,b\n1.2.4,b\n1.2.5,a\n")
    with pytest.raises(LabelsFileError, match="labelled both 'a' and 'b'"):
        read_study_labels(read_labels_table(labels), labels)


def test_study_level_ranks_by_the_collections_study_vectors(tmp_path: Path, tiny_model: Path) -> None:
    from indexer.pipeline import run_index
    from retrieval.collection import Collection
    from retrieval.eval_studies import load_studies
    from tests.conftest import make_settings

    folder = tmp_path / "in"
    folder.mkdir()
    study = _write_study(folder, testdata_file("CT_small.dcm"), "ct", 1, "P1")
    # a second series of three images in the same study: a mean over images weighs it 3:1, the study vector
    # (the mean of its two series vectors) 1:1
    second = pydicom.dcmread(testdata_file("MR_small.dcm"))
    series = generate_uid()
    for n in range(3):
        second.StudyInstanceUID, second.SeriesInstanceUID, second.PatientID = study, series, "P1"
        second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        second.save_as(folder / f"mr-{n}.dcm")
    others = [_write_study(folder, testdata_file("MR_small.dcm"), "mr", 1, p) for p in ("P2", "P3")]
    with Collection(make_settings(tmp_path / "data", tiny_model)) as collection:
        assert run_index(collection, [folder]).indexed == 6
        labelled = [LabelledStudy(study, "a"), LabelledStudy(others[0], "b"), LabelledStudy(others[1], "a")]
        study_set = load_studies(collection, labelled)
        stored = collection.catalog.cases.find_many("study", [study])[study]
    vectors = study_vectors(study_set)
    np.testing.assert_allclose(vectors[0], stored, atol=1e-6)
    rows = [study_set.image_ids.index(i) for i in study_set.studies[0].image_ids]
    assert len(rows) == 4
    image_mean = study_set.vectors[rows].mean(axis=0)
    assert float(vectors[0] @ (image_mean / np.linalg.norm(image_mean))) < 0.9999  # not the image mean
