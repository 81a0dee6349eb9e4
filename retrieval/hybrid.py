"""Words and meaning together: a text query ranked by the embedding and by the report match, fused by reciprocal
rank fusion (Cormack et al. 2009, k = 60); every hit carries both ranks."""

from __future__ import annotations

import numpy as np

from retrieval.collection import Collection
from retrieval.errors import BadQueryError
from retrieval.findings.hook import findings_of
from retrieval.query import Hit, QueryVector, add_reports, report_query, rows_and_vectors, search
from retrieval.store.repo import Filters
from retrieval.store.report_search import any_words

RRF_K = 60
MIN_DEPTH = 50  # each list is read this deep (or 4 k): a hit may come from either


def hybrid_search(
    collection: Collection,
    query: QueryVector,
    text: str,
    *,
    k: int = 10,
    filters: Filters | None = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
) -> list[Hit]:
    """Top-k images by RRF of (a) the embedding search of `query` and (b) their study's report match on any word
    of `text`; both lists under the same filters. Image level only (several images of one study share its rank).
    Snippets mark the text's words (and the report filter's)."""
    filters = filters or Filters()
    depth = max(MIN_DEPTH, 4 * k)
    by_vector = search(
        collection,
        query,
        k=depth,
        filters=filters,
        exclude_same_patient=exclude_same_patient,
        exclude_same_study=exclude_same_study,
        show_duplicates=True,
    )
    embedding_rank = {hit.image.id: hit.rank for hit in by_vector}
    reports = collection.catalog.reports
    studies = reports.ranked_studies(text, depth)
    allowed = collection.catalog.candidate_ids(filters)
    admitted = None if allowed is None else set(allowed.tolist())
    report_rank: dict[int, int] = {}
    images = reports.images_of_studies(studies)
    for rank, study in enumerate(studies, start=1):
        for image_id in images.get(study, []):
            if admitted is None or image_id in admitted:
                report_rank.setdefault(image_id, rank)
    if exclude_same_study and query.study_uid:
        unseen = [i for i in report_rank if i not in embedding_rank]  # the embedding search excluded its own
        rows = collection.catalog.hit_rows(unseen) if unseen else {}  # one read, not one per image
        same = {i for i in unseen if i not in rows or rows[i].study_instance_uid == query.study_uid}
        report_rank = {i: r for i, r in report_rank.items() if i not in same}
    fused = {
        image_id: sum(1.0 / (RRF_K + r) for r in (embedding_rank.get(image_id), report_rank.get(image_id)) if r)
        for image_id in embedding_rank.keys() | report_rank.keys()
    }
    chosen = sorted(fused, key=lambda i: (-fused[i], embedding_rank.get(i, depth + 1), i))[:k]
    hits = _hits(collection, query, chosen, {h.image.id: h for h in by_vector}, embedding_rank, report_rank)
    add_reports(collection, hits, report_query(filters.report, any_words(text)))
    return hits


def _hits(
    collection: Collection,
    query: QueryVector,
    chosen: list[int],
    known: dict[int, Hit],
    embedding_rank: dict[int, int],
    report_rank: dict[int, int],
) -> list[Hit]:
    missing = [i for i in chosen if i not in known]
    rows, vectors = rows_and_vectors(collection, missing)
    found = findings_of(collection, [i for i in missing if i in rows])
    hits: list[Hit] = []
    for image_id in chosen:
        hit = known.get(image_id)
        if hit is None:
            row = rows.get(image_id)
            if row is None or image_id not in vectors:  # removed meanwhile
                continue
            score = float(np.dot(vectors[image_id], query.vector))
            hit = Hit(rank=0, image=row, score=score, tags=found[image_id].tags, probes=found[image_id].probes)
        hit.rank = len(hits) + 1
        hit.embedding_rank, hit.report_rank = embedding_rank.get(image_id), report_rank.get(image_id)
        hits.append(hit)
    return hits


def require_text(text: str | None) -> str:
    """Hybrid search needs a text: its words are matched against the reports."""
    if not text or not text.strip():
        raise BadQueryError("hybrid search needs a text query (--text / text): its words are matched against reports")
    return text
