"""Words and meaning together: a text query ranked by the embedding and by the report match, fused by reciprocal
rank fusion (Cormack et al. 2009, k = 60); every hit carries both ranks. At series and study level a case's report
rank is that of its study."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

import numpy as np

from retrieval.collection import Collection
from retrieval.errors import BadQueryError
from retrieval.findings.hook import findings_of
from retrieval.query import MAX_K, Hit, QueryVector, add_reports, report_query, rows_and_vectors, search
from retrieval.query_levels import search_level_page
from retrieval.store.cases import CaseLevel
from retrieval.store.repo import Filters
from retrieval.store.report_search import any_words, any_words_query

Key = TypeVar("Key", int, str)

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
        with_reports=False,  # read deep; the fused top k's reports are read once below
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
    own_study = query.identity()[1] if exclude_same_study else None
    if own_study:
        unseen = [i for i in report_rank if i not in embedding_rank]  # the embedding search excluded its own
        rows = collection.catalog.hit_rows(unseen) if unseen else {}  # one read, not one per image
        same = {i for i in unseen if i not in rows or rows[i].study_instance_uid == own_study}
        report_rank = {i: r for i, r in report_rank.items() if i not in same}
    chosen = fuse(embedding_rank, report_rank)[:k]
    hits = _hits(collection, query, chosen, {h.image.id: h for h in by_vector}, embedding_rank, report_rank)
    add_reports(collection, hits, report_query(filters.report, any_words(text)))
    return hits


def hybrid_cases(
    collection: Collection,
    query: QueryVector,
    text: str,
    *,
    level: CaseLevel,
    k: int = 10,
    filters: Filters | None = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
) -> tuple[list[Hit], int]:
    """Top-k series or studies by RRF of (a) the level's embedding rank of `query` and (b) the report rank of the
    case's study on any word of `text`, and how many cases the filters admit. (b) ranks the cases of the `depth`
    best-matching studies; its cases are found by the level's own search kept to the studies whose report has one
    of the words (its `depth` best by the embedding), so both lists are cases built, filtered and excluded as a
    `--level` search builds them. The series of one study share its report rank."""
    filters = filters or Filters()
    depth = min(max(MIN_DEPTH, 4 * k), MAX_K)
    words = any_words_query(text)

    def level_search(report: str | None) -> tuple[list[Hit], int]:
        return search_level_page(
            collection,
            query,
            level=level,
            k=depth,
            filters=replace(filters, report=report),
            exclude_same_patient=exclude_same_patient,
            exclude_same_study=exclude_same_study,
            with_reports=False,  # read deep; the fused top k's reports are read once below
        )

    by_vector, total = level_search(filters.report)
    by_words, _ = level_search(f"({filters.report}) AND ({words})" if filters.report else words)
    study_rank = {s: r for r, s in enumerate(collection.catalog.reports.ranked_studies(text, depth), start=1)}

    def case(hit: Hit) -> str:
        return str(hit.image.series_instance_uid if level == "series" else hit.image.study_instance_uid)

    found = {case(h): h for h in by_words} | {case(h): h for h in by_vector}
    embedding_rank = {case(h): h.rank for h in by_vector}
    report_rank = {
        uid: study_rank[h.image.study_instance_uid or ""]
        for uid, h in found.items()
        if (h.image.study_instance_uid or "") in study_rank
    }
    hits: list[Hit] = []
    for uid in fuse(embedding_rank, report_rank)[:k]:
        hit = found[uid]
        hit.rank = len(hits) + 1
        hit.embedding_rank, hit.report_rank = embedding_rank.get(uid), report_rank.get(uid)
        hits.append(hit)
    add_reports(collection, hits, report_query(filters.report, any_words(text)))  # the report its rank came from
    return hits, total


def fuse(embedding_rank: dict[Key, int], report_rank: dict[Key, int]) -> list[Key]:
    """Ids of either list by their reciprocal rank fusion score, best first; equal scores by embedding rank (ids
    only in the report list after), then by id."""
    fused = {
        item: sum(1.0 / (RRF_K + r) for r in (embedding_rank.get(item), report_rank.get(item)) if r)
        for item in embedding_rank.keys() | report_rank.keys()
    }
    last = max(embedding_rank.values(), default=0) + 1
    return sorted(fused, key=lambda i: (-fused[i], embedding_rank.get(i, last), i))


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
