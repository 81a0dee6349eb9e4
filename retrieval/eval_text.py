"""`medsearch eval --text-queries`: per label one text query, scored against the labels three ways side by side.

For each label L the query text is the `--query-template` with L put in (underscores read as spaces). Over the
labelled items (images, or studies at study level) it is ranked:

    text    by the cosine of the text embedding with each item (what `search --text` ranks by);
    report  the same ranking, kept to the items whose study's latest report matches the text as a `--report`
            filter (its words all present, negated mentions never match): fewer than k items leave misses;
    hybrid  reciprocal rank fusion (k = 60, retrieval/hybrid.py) of the text rank and the rank of the item's study
            by the report match on any of the text's words (what `search --hybrid` ranks by); the items of one
            study share its report rank.

Relevant items are those labelled L; precision@k, recall@k and AP@k are those of evaluation.py with |R| = the
items labelled L. A mode's figures are the means over the labels (each label one query).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.evaluation import LabelSummary, RetrievalReport, ranking_metrics
from retrieval.hybrid import fuse

MODES = ("text", "report", "hybrid")
DEFAULT_QUERY_TEMPLATE = "{label}"


class ReportMatcher(Protocol):
    """What text queries need of the reports (the Catalog's `reports`)."""

    def matching(self, query: str) -> set[str]: ...

    def ranked_studies(self, text_query: str, limit: int) -> list[str]: ...


@dataclass
class TextQueryResults:
    """The three modes' metrics over one set of items; `rankings[mode][label]` are item indices, best first."""

    k: int
    texts: dict[str, str]  # label -> its query text
    modes: dict[str, RetrievalReport]
    rankings: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def query_text(template: str, label: str) -> str:
    """The text query of a label."""
    return template.format(label=label.replace("_", " "))


def label_rankings(
    vectors: npt.NDArray[np.float32],
    studies: Sequence[str | None],
    text_vector: npt.NDArray[np.float32],
    text: str,
    reports: ReportMatcher,
    depth: int,
) -> dict[str, list[int]]:
    """The items' order in each mode for one text (`studies[i]`: item i's study, None when unknown)."""
    scores = vectors @ text_vector
    positions = np.arange(len(scores))
    by_text = [int(i) for i in np.lexsort((positions, -scores))]
    matched = reports.matching(text)
    labelled = set(studies)
    study_rank: dict[str, int] = {}
    for study in reports.ranked_studies(text, depth):
        if study in labelled:
            study_rank.setdefault(study, len(study_rank) + 1)
    embedding_rank = {item: position for position, item in enumerate(by_text, start=1)}
    report_rank = {i: study_rank[s] for i, s in enumerate(studies) if s is not None and s in study_rank}
    return {
        "text": by_text,
        "report": [i for i in by_text if studies[i] in matched],
        "hybrid": fuse(embedding_rank, report_rank),
    }


def evaluate_text_queries(
    vectors: npt.NDArray[np.float32],
    labels: Sequence[str],
    studies: Sequence[str | None],
    text_vectors: dict[str, npt.NDArray[np.float32]],
    texts: dict[str, str],
    reports: ReportMatcher,
    k: int,
    depth: int,
) -> TextQueryResults:
    """Per label and mode: P@k, R@k, AP@k of the label's query; per mode the means over the labels."""
    names = sorted(set(labels))
    rankings: dict[str, dict[str, list[int]]] = {mode: {} for mode in MODES}
    for name in names:
        for mode, order in label_rankings(vectors, studies, text_vectors[name], texts[name], reports, depth).items():
            rankings[mode][name] = order
    modes: dict[str, RetrievalReport] = {}
    for mode in MODES:
        per_label: dict[str, LabelSummary] = {}
        for name in names:
            relevant = sum(1 for lb in labels if lb == name)
            precision, recall, ap = ranking_metrics(rankings[mode][name], labels, name, relevant, k)
            per_label[name] = LabelSummary(images=relevant, scored=1, precision=precision, recall=recall, map=ap)
        modes[mode] = RetrievalReport(
            k=k,
            images=len(labels),
            scored=len(names),
            skipped=0,
            precision=float(np.mean([s.precision or 0.0 for s in per_label.values()])),
            recall=float(np.mean([s.recall or 0.0 for s in per_label.values()])),
            map=float(np.mean([s.map or 0.0 for s in per_label.values()])),
            per_label=per_label,
        )
    return TextQueryResults(k, {n: texts[n] for n in names}, modes, rankings)


def text_queries_dict(results: TextQueryResults, names: Sequence[str]) -> dict[str, Any]:
    """The JSON of one level's text queries (`names[i]`: how item i is shown: a path or a study UID)."""
    modes = results.modes
    return {
        "k": results.k,
        **{f"{mode}_{metric}_at_k": getattr(modes[mode], metric) for mode in MODES for metric in ("precision", "map")},
        "per_label": {
            label: {
                "query": text,
                "relevant": modes["text"].per_label[label].images,
                **{
                    mode: {
                        "precision_at_k": modes[mode].per_label[label].precision,
                        "recall_at_k": modes[mode].per_label[label].recall,
                        "ap_at_k": modes[mode].per_label[label].map,
                        "top_k": [names[i] for i in results.rankings[mode][label][: results.k]],
                    }
                    for mode in MODES
                },
            }
            for label, text in results.texts.items()
        },
    }


def run_text_queries(
    collection: Collection,
    vectors: npt.NDArray[np.float32],
    labels: Sequence[str],
    studies: Sequence[str | None],
    template: str,
    k: int,
) -> TextQueryResults:
    """Embed each label's query text and score the three modes over these items (reports read from the catalog)."""
    names = sorted(set(labels))
    texts = {name: query_text(template, name) for name in names}
    encoded = collection.load_encoder().encode_texts([texts[name] for name in names])
    reports = collection.catalog.reports
    depth = max(1, reports.counts()["report_studies"])  # every study with a report may be ranked
    text_vectors = {name: np.asarray(v, np.float32) for name, v in zip(names, encoded, strict=True)}
    return evaluate_text_queries(vectors, labels, studies, text_vectors, texts, reports, k, depth)


def studies_of_sources(collection: Collection, uris: Sequence[str]) -> list[str | None]:
    """The StudyInstanceUID each source was indexed with (None: not indexed, or no study)."""
    study = {row.source_uri: row.study_instance_uid for row in collection.catalog.images_by_source(list(uris))}
    return [study.get(uri) for uri in uris]
