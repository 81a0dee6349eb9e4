"""Few-shot probes: train a classifier from labelled stored images, apply it to every image, rank the archive.

A probe answers one yes/no question. Labels are 0/1, or class names with `positive` naming the class that
counts as 1 (every other class is 0); for several classes, train one probe per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import NotFoundError
from retrieval.findings.common import (
    ApplyReport,
    apply_scorer,
    check_name,
    findings_store,
    model_key,
    require_same_model,
)
from retrieval.findings.errors import (
    BadTrainingSetError,
    ConflictingLabelsError,
    ProbeNotAppliedError,
    UnknownProbeError,
)
from retrieval.findings.scoring import Scorer
from retrieval.findings.training import fit_probe
from retrieval.labels import read_labels_table
from retrieval.store.findings import NewProbe
from retrieval.store.models import Image, Probe

BINARY = {"0", "1"}


@dataclass
class TrainingSet:
    """Image ids with 0/1 labels, and what 1 means."""

    ids: list[int]
    y: list[int]
    positive: str


@dataclass
class ProbeInfo:
    """A stored probe version as `probe list`, `probe train` and the API report it."""

    name: str
    version: int
    positive: str
    cv_auc: float
    cv_accuracy: float
    positives: int
    negatives: int
    folds: int
    applied: bool
    created: str


def probe_info(probe: Probe) -> ProbeInfo:
    metrics = json.loads(probe.metrics)
    return ProbeInfo(
        name=probe.name,
        version=probe.version,
        positive=probe.positive,
        cv_auc=float(metrics["cv_auc"]),
        cv_accuracy=float(metrics["cv_accuracy"]),
        positives=int(metrics["positives"]),
        negatives=int(metrics["negatives"]),
        folds=int(metrics["folds"]),
        applied=probe.applied is not None,
        created=probe.created.isoformat(),
    )


def training_set_from_file(collection: Collection, path: Path, positive: str | None = None) -> TrainingSet:
    """Rows naming an indexed image (`id`, `sop_instance_uid` or `path`) and a `label` (0/1 or a class name)."""
    table = read_labels_table(path)
    pairs: list[tuple[list[int], str]] = []
    missing: list[str] = []
    catalog = collection.catalog
    for row in table.rows:
        if not row.label:
            raise BadTrainingSetError(f"{path}: row {row.line} has no label")
        if row.image_id is not None:
            if not row.image_id.isdigit():
                raise BadTrainingSetError(f"{path}: row {row.line}: id {row.image_id!r} is not an image id")
            found = sorted(catalog.images([int(row.image_id)]))
        elif row.uid:
            found = _by_uid(collection, row.uid)
        elif row.uri:
            found = sorted(image.id for image in catalog.images_by_source([row.uri]))
        else:
            raise BadTrainingSetError(f"{path}: row {row.line} has neither an id, a sop_instance_uid nor a path")
        if not found:
            missing.append(f"row {row.line}")
        pairs.append((found, row.label))
    if missing:
        raise BadTrainingSetError(
            f"{path}: {len(missing)} rows name no indexed image ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): index them first, or fix the id, UID or path"
        )
    labels = {label for _, label in pairs}
    if positive is None:
        if not labels <= BINARY:
            raise BadTrainingSetError(
                f"the labels are class names ({', '.join(sorted(labels)[:6])}): say which one is the positive class "
                "with --positive CLASS (a probe answers one yes/no question; train one probe per class)"
            )
        positive = "1"
    elif positive not in labels:
        raise BadTrainingSetError(f"no row has the label {positive!r} given as the positive class")
    by_id: dict[int, int] = {}
    for ids, label in pairs:
        for image_id in ids:
            value = int(label == positive)
            if by_id.setdefault(image_id, value) != value:
                raise BadTrainingSetError(f"image {image_id} is labelled both positive and negative")
    ordered = sorted(by_id)
    return TrainingSet(ordered, [by_id[i] for i in ordered], positive)


def _by_uid(collection: Collection, uid: str) -> list[int]:
    return collection.catalog.ids_by_sop_uid(uid)


def training_set_from_ids(positive: Sequence[int], negative: Sequence[int]) -> TrainingSet:
    """Liked (positive) and unliked (negative) image ids, as the page sends them."""
    overlap = sorted(set(positive) & set(negative))
    if overlap:
        raise ConflictingLabelsError(f"images {overlap[:10]} are both positive and negative")
    ids = sorted(set(positive) | set(negative))
    pos = set(positive)
    return TrainingSet(ids, [int(i in pos) for i in ids], "1")


def stored_vectors(collection: Collection, ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """The stored vectors of these images, in order; an id without a vector is an error."""
    found = collection.catalog.vectors(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(f"no indexed image with id {', '.join(map(str, missing[:10]))}")
    return np.stack([found[i] for i in ids]).astype(np.float32)


def train_probe(collection: Collection, name: str, training: TrainingSet) -> ProbeInfo:
    """Fit, cross-validate and store the probe as the next version of `name` (not applied yet)."""
    check_name(name, "probe")
    key = model_key(collection)
    if key is None:
        raise BadTrainingSetError("nothing is indexed yet: index images, then label some of them")
    x = stored_vectors(collection, training.ids)
    fitted = fit_probe(x, np.asarray(training.y, dtype=np.int64))
    row = findings_store(collection).add_probe(
        NewProbe(name, key, training.positive, fitted.coef, fitted.intercept, fitted.metrics(), list(training.ids))
    )
    return probe_info(row)


def get_probe(collection: Collection, name: str, applied: bool = False) -> Probe:
    """The newest (applied) version of a probe made with the collection's model."""
    store = findings_store(collection)
    probe = store.probe(name, applied=applied)
    if probe is None:
        if applied and store.probe(name) is not None:
            raise ProbeNotAppliedError(f"probe {name!r} has not been applied yet: run `medsearch probe apply {name}`")
        raise UnknownProbeError(f"no probe named {name!r}; `medsearch probe list` shows the probes")
    require_same_model(collection, f"probe {name!r} (version {probe.version})", probe.fingerprint)
    return probe


def apply_probe(collection: Collection, name: str, chunk: int = 8192) -> tuple[ProbeInfo, ApplyReport]:
    """Write the newest version's probability for every stored image; new images are scored as they are written."""
    probe = get_probe(collection, name)
    findings_store(collection).mark_applied(probe.id)
    report = apply_scorer(collection, Scorer.build([], [probe], None), chunk)
    return probe_info(get_probe(collection, name)), report


def rank_probe(collection: Collection, name: str, k: int) -> tuple[ProbeInfo, list[tuple[Image, float]]]:
    """The k images most likely positive under the applied probe, leaving out its training examples."""
    probe = get_probe(collection, name, applied=True)
    top = findings_store(collection).top_probabilities(name, k, json.loads(probe.examples))
    rows = collection.catalog.images([i for i, _ in top])
    return probe_info(probe), [(rows[i], p) for i, p in top if i in rows]


def list_probes(collection: Collection) -> list[ProbeInfo]:
    """Every stored probe version."""
    return [probe_info(p) for p in findings_store(collection).probes()]


def remove_probe(collection: Collection, name: str) -> int:
    """Forget every version of a probe and its probabilities."""
    removed = findings_store(collection).remove_probe(name)
    if not removed:
        raise UnknownProbeError(f"no probe named {name!r}; `medsearch probe list` shows the probes")
    return removed


def usable_probes(collection: Collection) -> list[Probe]:
    """The applied probe versions made with the collection's model (the ones new images are scored with)."""
    key = model_key(collection)
    return [p for p in findings_store(collection).applied_probes() if p.fingerprint == key]
