"""`medsearch eval` on labels keyed by StudyInstanceUID: leave-one-out metrics at image level and at study level.

Every indexed image of a labelled study carries its study's label. Image level: each image is a query over the
images of the other labelled studies (never its own study; never its own patient when the patient is known).
Study level: each study is a query over the other labelled studies (never its own patient), ranked by the cosine
of the study vectors: the collection's own (those a `--level study` search ranks by, the normalised mean of the
study's series vectors), or for a study without one the unit mean of its image vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import LabelsFileError
from retrieval.evaluation import RetrievalReport, evaluate_rankings, rankings
from retrieval.labels import LabelsTable


@dataclass
class LabelledStudy:
    """One labelled study and the indexed images it holds."""

    uid: str
    label: str
    patient: str | None = None
    image_ids: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


@dataclass
class StudySet:
    """The labelled studies found in the collection, their images' vectors and labels (in image id order)."""

    studies: list[LabelledStudy]
    vectors: npt.NDArray[np.float32]  # one row per image
    labels: list[str]  # per image: its study's label
    groups: list[str | None]  # per image: what a query must not retrieve (its patient, else its study)
    sources: list[str]  # per image
    image_ids: list[int]  # per image
    missing: list[str]  # labelled studies with no indexed image
    stored: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)  # the collection's study vectors


def is_study_table(table: LabelsTable) -> bool:
    """A labels file keyed by study: a study column and no path column."""
    return any(row.study for row in table.rows) and not any(row.uri for row in table.rows)


def read_study_labels(table: LabelsTable, csv_path: Path) -> list[LabelledStudy]:
    """Rows of study,label[,patient]; a study listed twice must keep one label."""
    studies: dict[str, LabelledStudy] = {}
    for row in table.rows:
        if not row.study or not row.label:
            raise LabelsFileError(f"{csv_path} line {row.line}: every row needs a study and a label")
        seen = studies.get(row.study)
        if seen is not None and seen.label != row.label:
            raise LabelsFileError(
                f"{csv_path} line {row.line}: study {row.study} is labelled both {seen.label!r} and {row.label!r}"
            )
        studies.setdefault(row.study, LabelledStudy(row.study, row.label, row.patient))
    if len(studies) < 3 or len({s.label for s in studies.values()}) < 2:
        raise LabelsFileError(f"{csv_path} needs at least 3 studies and 2 different labels to evaluate retrieval")
    return list(studies.values())


def load_studies(collection: Collection, studies: list[LabelledStudy]) -> StudySet:
    """The stored vectors of every image of the labelled studies (nothing is encoded: the studies are indexed)."""
    by_uid = {s.uid: s for s in studies}
    vectors: list[npt.NDArray[np.float32]] = []
    owners: list[LabelledStudy] = []
    ids: list[int] = []
    sources: list[str] = []
    for study_uid, image_id, patient_hash, uri, vector in collection.catalog.vectors_by_study(list(by_uid)):
        study = by_uid[study_uid]
        study.patient = study.patient or patient_hash
        study.image_ids.append(image_id)
        study.sources.append(uri)
        vectors.append(vector)
        owners.append(study)
        sources.append(uri)
        ids.append(image_id)
    found = [s for s in studies if s.image_ids]
    labels = [s.label for s in owners]
    groups: list[str | None] = [s.patient or f"study:{s.uid}" for s in owners]
    if len(found) < 3 or len({s.label for s in found}) < 2:
        raise LabelsFileError(
            f"only {len(found)} of the {len(studies)} labelled studies are indexed (with "
            f"{len({s.label for s in found})} labels): index them first, at least 3 studies of 2 labels"
        )
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), np.float32)
    stored = collection.catalog.cases.find_many("study", [s.uid for s in found])
    missing = [s.uid for s in studies if not s.image_ids]
    return StudySet(found, matrix, labels, groups, sources, ids, missing, stored)


def study_vectors(study_set: StudySet) -> npt.NDArray[np.float32]:
    """One unit vector per study: its stored study vector, else the normalised mean of its images' vectors."""
    row_of = {image_id: row for row, image_id in enumerate(study_set.image_ids)}
    out = []
    for study in study_set.studies:
        if study.uid in study_set.stored:
            out.append(study_set.stored[study.uid])
            continue
        mean = study_set.vectors[[row_of[i] for i in study.image_ids]].mean(axis=0)
        norm = float(np.linalg.norm(mean))
        out.append(mean / norm if norm > 0 else mean)
    return np.stack(out).astype(np.float32)


def evaluate_studies(study_set: StudySet, k: int) -> RetrievalReport:
    """Leave-one-out metrics with the studies as the items (same-patient studies excluded when known)."""
    vectors = study_vectors(study_set)
    patients = [s.patient for s in study_set.studies]
    return evaluate_rankings(rankings(vectors, patients), [s.label for s in study_set.studies], patients, k)


def study_report_dict(report: RetrievalReport, study_set: StudySet) -> dict[str, Any]:
    """The study-level part of the JSON report (patients never included)."""
    studies = study_set.studies
    return {
        "k": report.k,
        "studies": report.images,
        "missing_studies": study_set.missing,
        "scored_queries": report.scored,
        "skipped_queries": report.skipped,
        "precision_at_k": report.precision,
        "recall_at_k": report.recall,
        "map_at_k": report.map,
        "per_label": {
            label: {
                "studies": s.images,
                "scored": s.scored,
                "precision_at_k": s.precision,
                "recall_at_k": s.recall,
                "map_at_k": s.map,
            }
            for label, s in report.per_label.items()
        },
        "queries": [
            {
                "study": studies[q.index].uid,
                "label": q.label,
                "images": len(studies[q.index].image_ids),
                "relevant": q.relevant,
                "top_k": [studies[i].uid for i in q.ranking[: report.k]],
                "precision_at_k": q.precision,
                "recall_at_k": q.recall,
                "ap_at_k": q.average_precision,
            }
            for q in report.queries
        ],
    }
