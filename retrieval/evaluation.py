"""Retrieval quality on a labelled set: leave-one-out precision@k, recall@k, mAP@k per label, and zero-shot accuracy.

Definitions (per query image q, over the other labelled images that are eligible: not q itself and, when q's
patient is known, not of q's patient; R = eligible images with q's label; rel(i) = 1 if the i-th ranked
eligible image has q's label):

    precision@k = sum(rel(1..k)) / k
    recall@k    = sum(rel(1..k)) / |R|
    AP@k        = sum_{i<=k} rel(i) * precision@i / min(k, |R|)

Queries with |R| = 0 (no other eligible image of their label) cannot be scored and are reported as skipped.
Each metric is the mean over scored queries; per label, the mean over that label's scored queries.
Zero-shot: each image is assigned the label whose prompt embedding has the highest cosine with it.
Probe AUC: per label, the out-of-fold ROC AUC of a logistic-regression probe of that label against the rest
(retrieval/findings/training.py; needs 3 images of the label and 3 others; folds are not grouped by patient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass
class QueryResult:
    """One leave-one-out query: its ranking (indices into the labelled set) and its metrics."""

    index: int
    label: str
    ranking: list[int]
    relevant: int
    precision: float = 0.0
    recall: float = 0.0
    average_precision: float = 0.0

    @property
    def scored(self) -> bool:
        return self.relevant > 0


@dataclass
class LabelSummary:
    """Mean metrics of one label's scored queries."""

    images: int
    scored: int
    precision: float | None  # None when no query of this label could be scored
    recall: float | None
    map: float | None
    zero_shot_accuracy: float | None = None
    probe_auc: float | None = None  # cross-validated AUC of a one-vs-rest probe (None: too few images)


@dataclass
class RetrievalReport:
    """Everything `medsearch eval` reports."""

    k: int
    images: int
    scored: int
    skipped: int
    precision: float
    recall: float
    map: float
    per_label: dict[str, LabelSummary]
    queries: list[QueryResult] = field(default_factory=list)
    zero_shot_accuracy: float | None = None
    zero_shot_template: str | None = None


def query_metrics(ranking: Sequence[int], labels: Sequence[str], query: int, relevant: int, k: int) -> QueryResult:
    """precision@k, recall@k and AP@k of one ranking (indices into `labels`), as defined above."""
    result = QueryResult(query, labels[query], list(ranking), relevant)
    if relevant:
        result.precision, result.recall, result.average_precision = ranking_metrics(
            ranking, labels, labels[query], relevant, k
        )
    return result


def ranking_metrics(
    ranking: Sequence[int], labels: Sequence[str], target: str, relevant: int, k: int
) -> tuple[float, float, float]:
    """(precision@k, recall@k, AP@k) of a ranking for `target` (`relevant` > 0 items carry it); a ranking shorter
    than k (a filter admitted fewer) counts its empty places as misses."""
    rel = [1 if labels[i] == target else 0 for i in ranking[:k]]
    running = 0
    total = 0.0
    for position, is_rel in enumerate(rel, start=1):
        if is_rel:
            running += 1
            total += running / position
    return running / k, running / relevant, total / min(k, relevant)


def eligible(query: int, patients: Sequence[str | None]) -> list[int]:
    """Indices a query may retrieve: not itself and not of its own (known) patient."""
    own = patients[query]
    return [j for j in range(len(patients)) if j != query and (own is None or patients[j] != own)]


def rankings(vectors: npt.NDArray[np.float32], patients: Sequence[str | None]) -> list[list[int]]:
    """Leave-one-out rankings by cosine (vectors are unit length), ties broken by position in the set."""
    scores = vectors @ vectors.T
    out: list[list[int]] = []
    for q in range(len(vectors)):
        cand = np.asarray(eligible(q, patients), dtype=np.int64)
        order = cand[np.lexsort((cand, -scores[q, cand]))] if len(cand) else cand
        out.append([int(i) for i in order])
    return out


def evaluate_rankings(
    ranked: Sequence[Sequence[int]], labels: Sequence[str], patients: Sequence[str | None], k: int
) -> RetrievalReport:
    """Aggregate metrics of explicit leave-one-out rankings (one per labelled image, in set order)."""
    results = []
    for q, ranking in enumerate(ranked):
        relevant = sum(1 for j in eligible(q, patients) if labels[j] == labels[q])
        results.append(query_metrics(ranking, labels, q, relevant, k))
    scored = [r for r in results if r.scored]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else 0.0

    def label_mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    per_label: dict[str, LabelSummary] = {}
    for label in sorted(set(labels)):
        mine = [r for r in results if r.label == label]
        ok = [r for r in mine if r.scored]
        per_label[label] = LabelSummary(
            images=len(mine),
            scored=len(ok),
            precision=label_mean([r.precision for r in ok]),
            recall=label_mean([r.recall for r in ok]),
            map=label_mean([r.average_precision for r in ok]),
        )
    return RetrievalReport(
        k=k,
        images=len(labels),
        scored=len(scored),
        skipped=len(results) - len(scored),
        precision=mean([r.precision for r in scored]),
        recall=mean([r.recall for r in scored]),
        map=mean([r.average_precision for r in scored]),
        per_label=per_label,
        queries=results,
    )


def zero_shot(
    image_vectors: npt.NDArray[np.float32], prompt_vectors: npt.NDArray[np.float32], labels: Sequence[str]
) -> tuple[float, dict[str, float], list[str]]:
    """Accuracy overall and per label of assigning each image the label of its best-matching prompt.

    `prompt_vectors[i]` is the prompt of the i-th label in sorted order of the distinct labels.
    """
    names = sorted(set(labels))
    predicted = [names[int(i)] for i in np.argmax(image_vectors @ prompt_vectors.T, axis=1)]
    correct = [p == t for p, t in zip(predicted, labels, strict=True)]
    per_label = {name: float(np.mean([c for c, t in zip(correct, labels, strict=True) if t == name])) for name in names}
    return float(np.mean(correct)), per_label, predicted


def evaluate(
    vectors: npt.NDArray[np.float32],
    labels: Sequence[str],
    patients: Sequence[str | None],
    k: int,
    prompt_vectors: npt.NDArray[np.float32] | None = None,
    template: str | None = None,
) -> RetrievalReport:
    """Leave-one-out retrieval metrics, plus zero-shot accuracy when prompt vectors are given."""
    report = evaluate_rankings(rankings(vectors, patients), labels, patients, k)
    from retrieval.findings.training import probe_aucs

    for label, auc in probe_aucs(vectors, list(labels)).items():
        report.per_label[label].probe_auc = auc
    if prompt_vectors is not None:
        accuracy, per_label, _ = zero_shot(vectors, prompt_vectors, labels)
        report.zero_shot_accuracy, report.zero_shot_template = accuracy, template
        for label, value in per_label.items():
            report.per_label[label].zero_shot_accuracy = value
    return report
