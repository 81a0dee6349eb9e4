"""Search at series or study level: the case indexes, any-image filters, key slices and the maxsim re-ranking."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from retrieval.collection import Collection
from retrieval.errors import BadQueryError
from retrieval.findings.hook import check_filters, findings_of
from retrieval.query import (
    MAX_K,
    CaseInfo,
    GroupBy,
    Hit,
    QueryVector,
    add_reports,
    exclude,
    probe_of,
    report_query,
    rows_and_vectors,
    search_page,
)
from retrieval.store.cases import CaseLevel, CaseRow
from retrieval.store.models import Image
from retrieval.store.repo import Filters
from retrieval.store.series_plans import CaseFacts
from retrieval.vocabulary import LEVELS, Level, Rerank

RERANK_DEPTH = 50  # centroid candidates the maxsim re-ranking re-scores (at least; k when k is larger)


def search_level_page(
    collection: Collection,
    query: QueryVector,
    *,
    level: Level = "image",
    rerank: Rerank = "none",
    k: int = 10,
    filters: Filters | None = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
    group_by: GroupBy = "image",
    show_duplicates: bool = False,
    with_reports: bool = True,
) -> tuple[list[Hit], int]:
    """`query.search_page` at the image level; at series or study level the best cases and how many the filters
    admit. A case matches the filters when any of its images does; a query made from indexed images (an id, a
    series, a study, feedback's marks) never returns the cases holding them. `rerank` acts at the case levels
    only (an image is one slice: nothing to interact with), `group_by` at the image level only (a case is a group)."""
    if level == "image":
        return search_page(
            collection,
            query,
            k=k,
            filters=filters,
            exclude_same_patient=exclude_same_patient,
            exclude_same_study=exclude_same_study,
            group_by=group_by,
            show_duplicates=show_duplicates,
            with_reports=with_reports,
        )
    if level not in LEVELS:
        raise BadQueryError(f"level must be one of {', '.join(LEVELS)}")
    if not 1 <= k <= MAX_K:
        raise BadQueryError(f"k must be between 1 and {MAX_K}")
    filters = filters or Filters()
    exclude(filters, query, exclude_same_patient, exclude_same_study)
    check_filters(collection, filters)
    return _search_cases(collection, query, level, rerank, k, filters, with_reports)


def _search_cases(
    collection: Collection,
    query: QueryVector,
    level: CaseLevel,
    rerank: Rerank,
    k: int,
    filters: Filters,
    with_reports: bool,
) -> tuple[list[Hit], int]:
    indexes = collection.case_indexes
    if indexes is None:
        return [], 0
    cases = collection.catalog.cases
    index = indexes[level].index
    if index.ntotal == 0:
        return [], 0
    candidates = collection.catalog.case_candidates(level, filters)
    available = index.ntotal if candidates is None else len(candidates)
    if available == 0:
        return [], 0
    own = query.exclude_ids | ({query.image_id} if query.image_id is not None else set())
    skip = cases.ids_of_images(level, own) if own else set()
    depth = max(k, RERANK_DEPTH) if rerank == "maxsim" else k
    scores, ids = index.search(query.vector, min(depth + len(skip), available), candidates, probe_of(query))
    ranked = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0 and int(i) not in skip]
    rows = cases.rows([i for i, _ in ranked])
    ranked = [(i, s) for i, s in ranked if i in rows][:depth]  # a case removed meanwhile is left out
    members = cases.member_ids(level, [rows[i].uid for i, _ in ranked])
    member_rows, vectors = rows_and_vectors(collection, sorted({m for ms in members.values() for m in ms}))
    if rerank == "maxsim":
        query_slices = query.slices if query.slices is not None else query.vector.reshape(1, -1)
        ranked = maxsim_rerank(query_slices, ranked, {i: _stack(members[rows[i].uid], vectors) for i, _ in ranked})
    hits: list[Hit] = []
    facts = collection.catalog.series.case_facts(level, [rows[i].uid for i, _ in ranked[:k]])
    for case_id, score in ranked[:k]:
        case = rows[case_id]
        hit = _case_hit(query, case, score, members[case.uid], member_rows, vectors, facts.get(case.uid))
        if hit is not None:
            hit.rank = len(hits) + 1
            hits.append(hit)
    _text_scores(collection, query, hits, level)
    found = findings_of(collection, [h.image.id for h in hits])
    for hit in hits:
        hit.tags, hit.probes = found[hit.image.id].tags, found[hit.image.id].probes
    if with_reports:
        add_reports(collection, hits, report_query(filters.report))
    return hits, available


def _stack(ids: list[int], vectors: dict[int, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    have = [vectors[i] for i in ids if i in vectors]
    return np.stack(have).astype(np.float32) if have else np.zeros((0, 0), np.float32)


def maxsim(query_slices: npt.NDArray[np.float32], case_slices: npt.NDArray[np.float32]) -> float:
    """Late interaction: the mean over the query's slices of each one's best cosine with the case's slices."""
    if len(case_slices) == 0 or len(query_slices) == 0:
        return -1.0
    return float((query_slices @ case_slices.T).max(axis=1).mean())


def maxsim_rerank(
    query_slices: npt.NDArray[np.float32],
    ranked: list[tuple[int, float]],
    case_slices: dict[int, npt.NDArray[np.float32]],
) -> list[tuple[int, float]]:
    """The centroid search's candidates re-ordered by `maxsim` (its score replaces the centroid cosine); equal
    scores keep the centroid order."""
    scored = [(case_id, maxsim(query_slices, case_slices[case_id])) for case_id, _ in ranked]
    return sorted(scored, key=lambda pair: -pair[1])


def slice_order(images: list[Image]) -> list[int]:
    """Image ids of one series in slice order: by position along the slice normal (recorded by series planning),
    images without one (single images, rows indexed before planning existed) after them by frame and id."""

    def key(image: Image) -> tuple[bool, float, int, int]:
        position = image.slice_position
        return (position is None, position if position is not None else 0.0, image.frame, image.id)

    return [image.id for image in sorted(images, key=key)]


def _sampled(level: CaseLevel, ids: list[int], rows: dict[int, Image]) -> list[int]:
    """A case's indexed slices in order: a series by `slice_order`, a study series after series (by first id)."""
    images = [rows[i] for i in ids if i in rows]
    if level == "series":
        return slice_order(images)
    by_series: dict[str, list[Image]] = {}
    for image in images:
        by_series.setdefault(image.series_instance_uid or f"image:{image.id}", []).append(image)
    return [i for group in by_series.values() for i in slice_order(group)]


def _case_hit(
    query: QueryVector,
    case: CaseRow,
    score: float,
    ids: list[int],
    rows: dict[int, Image],
    vectors: dict[int, npt.NDArray[np.float32]],
    facts: CaseFacts | None = None,
) -> Hit | None:
    """A case hit: its key slice (the member most similar to the query) stands as the hit's image row."""
    have = [i for i in ids if i in rows and i in vectors]
    if not have:
        return None
    cosines = np.stack([vectors[i] for i in have]) @ query.vector
    key = have[int(np.argmax(cosines))]
    sampled = _sampled(case.level, have, rows)  # type: ignore[arg-type]
    facts = facts or CaseFacts()
    total = case.images + facts.unsampled
    info = CaseInfo(
        case.level,  # type: ignore[arg-type]
        key,
        sampled,
        total,
        case.series,
        facts.series_description,
        facts.study_description,
    )
    return Hit(rank=0, image=rows[key], score=score, case=info)


def _text_scores(collection: Collection, query: QueryVector, hits: list[Hit], level: CaseLevel) -> None:
    """Calibrated text-image probability of a case: of its score for a text query, of the text part's cosine
    with the case vector for an image+text query."""
    if not hits or (query.kind != "text" and query.text_vector is None):
        return
    if query.text_vector is None:
        cosines = [h.score for h in hits]
    else:
        found = collection.catalog.cases.find_many(level, [_uid(h, level) for h in hits])
        cosines = [float(np.dot(found[_uid(h, level)], query.text_vector)) for h in hits]
    calibrated = collection.load_encoder().text_scores(np.asarray(cosines, np.float32))
    for hit, value in zip(hits, calibrated, strict=True):
        hit.text_score = float(value)


def _uid(hit: Hit, level: CaseLevel) -> str:
    image = hit.image
    return str(image.series_instance_uid if level == "series" else image.study_instance_uid)
