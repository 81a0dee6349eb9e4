"""The labelled set of `medsearch eval`: read the CSV, embed images as indexing does (or reuse stored vectors)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from retrieval.collection import Collection
from retrieval.errors import LabelsFileError, MedsearchError
from retrieval.evaluation import RetrievalReport
from retrieval.imaging.types import DecodeLimits
from retrieval.prepare import prepare_bytes
from retrieval.privacy import hash_patient_id
from retrieval.sources.files import read_file
from retrieval.store.models import Image, Vector

DEFAULT_TEMPLATE = "a medical image showing {label}"


@dataclass
class LabelledImage:
    """One row of the labelled set; `patient` is the CSV value or the file's hashed PatientID."""

    path: Path
    label: str
    patient: str | None = None


def read_labels(csv_path: Path) -> list[LabelledImage]:
    """Rows of a CSV with columns path, label and optionally patient (paths relative to the CSV's folder)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower() for c in reader.fieldnames or []}
            if not {"path", "label"} <= columns:
                raise LabelsFileError(
                    f"{csv_path} needs a header with columns path,label (optionally patient); found {sorted(columns)}"
                )
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except FileNotFoundError as exc:
        raise LabelsFileError(f"labels file {csv_path} does not exist") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelsFileError(f"{csv_path} is not a UTF-8 CSV file: {exc}") from exc
    items = []
    for number, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise LabelsFileError(f"{csv_path} line {number}: every row needs a path and a label")
        path = Path(row["path"])
        path = path if path.is_absolute() else (csv_path.parent / path)
        items.append(LabelledImage(path.resolve(), row["label"], row.get("patient") or None))
    if len({i.label for i in items}) < 2 or len(items) < 3:
        raise LabelsFileError(f"{csv_path} needs at least 3 images and 2 different labels to evaluate retrieval")
    return items


def stored_vectors(collection: Collection, items: list[LabelledImage]) -> dict[Path, tuple[Any, str | None]]:
    """Vectors of images already indexed from the same file (single-frame match on the source path)."""
    uris = [str(i.path) for i in items]
    found: dict[Path, tuple[Any, str | None]] = {}
    with collection.catalog.sessions() as session:
        rows = session.execute(
            select(Image.source_uri, Image.patient_hash, Vector.vector)
            .join(Vector, Vector.image_id == Image.id)
            .where(Image.source_uri.in_(uris))
        ).all()
    counts: dict[str, int] = {}
    for uri, _, _ in rows:
        counts[uri] = counts.get(uri, 0) + 1
    for uri, patient_hash, blob in rows:
        if counts[uri] == 1:  # an all-frames file has several rows: embed its middle frame instead
            found[Path(uri)] = (np.frombuffer(blob, dtype=np.float32).copy(), patient_hash)
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
        encoder = collection.encoder
        try:
            prepared = prepare_bytes(
                read_file(item.path, settings.max_file_bytes),
                encoder.image_processor,
                frames="middle",
                limits=DecodeLimits(max_pixels=settings.max_pixels),
                ct_window=settings.ct_window,
            )
        except MedsearchError as exc:
            raise LabelsFileError(f"{item.path} (label {item.label!r}) could not be read: {exc}") from exc
        item.patient = item.patient or hash_patient_id(prepared.meta.patient_id, collection.salt)
        vectors.append(None)
        pending.append((position, prepared.pixel_values[0]))
    batch = settings.batch_size
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        encoded = collection.encoder.encode_pixel_values(np.stack([p for _, p in chunk]))
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
