"""The labelled set of `medsearch eval`: read the CSV, embed images as indexing does (or reuse stored vectors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import LabelsFileError, MedsearchError
from retrieval.evaluation import RetrievalReport
from retrieval.imaging.types import DecodeLimits
from retrieval.labels import read_labels_table
from retrieval.prepare import prepare_bytes
from retrieval.privacy import hash_patient_id
from retrieval.sources.files import read_file

DEFAULT_TEMPLATE = "a medical image showing {label}"


@dataclass
class LabelledImage:
    """One row of the labelled set; `patient` is the CSV value or the file's hashed PatientID."""

    path: Path
    label: str
    patient: str | None = None


def read_labels(csv_path: Path) -> list[LabelledImage]:
    """Rows of a CSV with columns path, label and optionally patient (paths relative to the CSV's folder)."""
    table = read_labels_table(csv_path)
    if not {"path", "label"} <= table.columns:
        raise LabelsFileError(
            f"{csv_path} needs a header with columns path,label (optionally patient); found {sorted(table.columns)}"
        )
    items = []
    for row in table.rows:
        if not row.uri or not row.label:
            raise LabelsFileError(f"{csv_path} line {row.line}: every row needs a path and a label")
        items.append(LabelledImage(Path(row.uri), row.label, row.patient))
    if len({i.label for i in items}) < 2 or len(items) < 3:
        raise LabelsFileError(f"{csv_path} needs at least 3 images and 2 different labels to evaluate retrieval")
    return items


def stored_vectors(collection: Collection, items: list[LabelledImage]) -> dict[Path, tuple[Any, str | None]]:
    """Vectors of images already indexed from the same file (single-frame match on the source path)."""
    rows = collection.catalog.vectors_by_source([str(i.path) for i in items])
    found: dict[Path, tuple[Any, str | None]] = {}
    counts: dict[str, int] = {}
    for uri, _, _ in rows:
        counts[uri] = counts.get(uri, 0) + 1
    for uri, patient_hash, vector in rows:
        if counts[uri] == 1:  # an all-frames file has several rows: embed its middle frame instead
            found[Path(uri)] = (vector, patient_hash)
    return found


def embed_labelled(collection: Collection, items: list[LabelledImage]) -> tuple[npt.NDArray[np.float32], int]:
    """Unit vectors for every item (stored ones reused) and how many came from the index; fills patients."""
    stored = stored_vectors(collection, items)
    vectors: list[npt.NDArray[np.float32] | None] = []
    pending: list[tuple[int, npt.NDArray[np.float32]]] = []
    settings = collection.settings
    for position, item in enumerate(items):
        if item.path in stored:
            vector, patient_hash = stored[item.path]
            item.patient = item.patient or patient_hash
            vectors.append(vector)
            continue
        encoder = collection.load_encoder()
        try:
            prepared = prepare_bytes(
                read_file(item.path, settings.max_file_bytes),
                encoder.image_processor,
                frames="middle",
                limits=DecodeLimits.of(settings),
                ct_window=settings.ct_window,
                ct_channels=settings.ct_channels,
            )
        except MedsearchError as exc:
            raise LabelsFileError(f"{item.path} (label {item.label!r}) could not be read: {exc}") from exc
        item.patient = item.patient or hash_patient_id(prepared.meta.patient_id, collection.salt)
        vectors.append(None)
        pending.append((position, prepared.pixel_values[0]))
    batch = settings.batch_size
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        encoded = collection.load_encoder().encode_pixel_values(np.stack([p for _, p in chunk]))
        for (position, _), vector in zip(chunk, encoded, strict=True):
            vectors[position] = vector
    out = np.stack([v for v in vectors if v is not None]).astype(np.float32)
    return out, len(stored)


def report_dict(report: RetrievalReport, items: list[LabelledImage], from_index: int) -> dict[str, Any]:
    """The JSON report: totals, per-label table, and every query's ranked paths (patients never included)."""
    return {
        "k": report.k,
        "images": report.images,
        "from_index": from_index,
        "scored_queries": report.scored,
        "skipped_queries": report.skipped,
        "precision_at_k": report.precision,
        "recall_at_k": report.recall,
        "map_at_k": report.map,
        "zero_shot": None
        if report.zero_shot_accuracy is None
        else {"template": report.zero_shot_template, "accuracy": report.zero_shot_accuracy},
        "per_label": {
            label: {
                "images": s.images,
                "scored": s.scored,
                "precision_at_k": s.precision,
                "recall_at_k": s.recall,
                "map_at_k": s.map,
                "zero_shot_accuracy": s.zero_shot_accuracy,
                "probe_cv_auc": s.probe_auc,
            }
            for label, s in report.per_label.items()
        },
        "queries": [
            {
                "path": str(items[q.index].path),
                "label": q.label,
                "relevant": q.relevant,
                "top_k": [str(items[i].path) for i in q.ranking[: report.k]],
                "precision_at_k": q.precision,
                "recall_at_k": q.recall,
                "ap_at_k": q.average_precision,
            }
            for q in report.queries
        ],
    }
