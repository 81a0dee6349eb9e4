"""Search routes: by uploaded image (optionally with text), by text, similar-to an indexed image, and by a case
(an indexed series or study, or uploaded files of one) at the image, series or study level."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.audit import audit_filters
from api.deps import FreshDep, ImageIdDep
from api.limits import read_upload
from api.query_model import openapi_extra, query_dependency
from api.schemas import (
    LEVEL_HELP,
    RERANK_HELP,
    ROI_HELP,
    ROI_PATTERN,
    CaseQuery,
    FilterParams,
    SearchResponse,
    SimilarQuery,
    TextSearchRequest,
)
from api.state import ServiceState
from api.views import hit_data
from retrieval import query as engine
from retrieval.context import reference_context
from retrieval.errors import BadQueryError, ModelLoadError, TooLargeError
from retrieval.hybrid import hybrid_cases, hybrid_search
from retrieval.imaging.roi import parse_roi
from retrieval.query import MAX_K, MAX_TEXT_CHARS
from retrieval.query_cases import embed_case, embed_upload
from retrieval.query_levels import search_level_page
from retrieval.store.repo import Filters
from retrieval.vocabulary import GroupBy, Level, Rerank
from retrieval.why_empty import why_empty

router = APIRouter(prefix="/v1", tags=["search"])
__all__ = ["ROI_HELP", "ROI_PATTERN", "router"]  # the region form field's pattern and help (export.py uses them)
# the GET searches' query parameters, read in one pass (api/query_model.py) and declared in OpenAPI as before
SimilarQueryDep = Annotated[SimilarQuery, Depends(query_dependency(SimilarQuery))]
CaseQueryDep = Annotated[CaseQuery, Depends(query_dependency(CaseQuery))]
audit = logging.getLogger("medsearch.audit")
INLINE_MAX_HITS = 100  # the most hits (k + offset) a search answered on the event loop shows


def _run(
    state: ServiceState,
    query: engine.QueryVector,
    params: FilterParams,
    k: int,
    offset: int,
    group_by: GroupBy,
    show_duplicates: bool = False,
    level: Level = "image",
    rerank: Rerank = "none",
) -> SearchResponse:
    filters = params.store_filters()
    hits, total = search_level_page(
        state.collection,
        query,
        level=level,
        rerank=rerank,
        k=min(k + offset, MAX_K),
        filters=filters,
        exclude_same_patient=params.exclude_same_patient,
        exclude_same_study=params.exclude_same_study,
        group_by=group_by,
        show_duplicates=show_duplicates,
    )
    hits = hits[offset:]
    region = list(query.region) if query.region else None
    return _response(state, query.kind, level, k, offset, total, hits, filters, region)


def _response(
    state: ServiceState,
    kind: str,
    level: Level,
    k: int,
    offset: int,
    total: int,
    hits: list[engine.Hit],
    filters: Filters,
    region: list[int] | None = None,
) -> SearchResponse:
    """The answer validated in one pass from plain data (hits and context included): a model built per hit costs
    a Python-level construction each, ~10 us a hit."""
    fingerprint = state.collection.catalog.fingerprint()
    template, dicomweb = state.settings.viewer_url_template, state.settings.dicomweb_url
    return SearchResponse.model_validate(
        {
            "query": kind,
            "level": level,
            "k": k,
            "offset": offset,
            "total": total,
            "hits": [hit_data(h, template, dicomweb) for h in hits],
            "model": fingerprint.model_id if fingerprint else None,
            "standin_model": bool(fingerprint and fingerprint.standin),
            "empty_reason": None if hits else why_empty(state.collection, filters, offset),
            "roi": region,
            "context": reference_context(hits).as_dict(),
        }
    )


@dataclass(frozen=True)
class Answer:
    """A search answer as the worker thread leaves it: the JSON body, and what the audit line says of it."""

    body: bytes
    kind: str
    hits: int

    @classmethod
    def of(cls, result: SearchResponse) -> Answer:
        """Serialised in the thread that built it (its objects are still in that core's cache), in one pass.
        Returned as a model, FastAPI would dump it to a dict, validate that against `response_model` again and
        encode it with `json`: three passes over every hit."""
        return cls(result.model_dump_json(by_alias=True).encode(), result.query, len(result.hits))

    def response(self) -> Response:
        """The HTTP response."""
        return Response(self.body, media_type="application/json")


def _hybrid(state: ServiceState, query: engine.QueryVector, body: TextSearchRequest) -> SearchResponse:
    if body.group_by != "image" or body.rerank != "none":
        raise BadQueryError("mode=hybrid ranks images or cases (level): leave group_by and rerank out")
    filters = body.store_filters()
    if body.level != "image":
        hits, total = hybrid_cases(
            state.collection,
            query,
            body.text,
            level=body.level,
            k=min(body.k + body.offset, MAX_K),
            filters=filters,
            exclude_same_patient=body.exclude_same_patient,
            exclude_same_study=body.exclude_same_study,
        )
        hits = hits[body.offset :]
    else:
        hits = hybrid_search(
            state.collection,
            query,
            body.text,
            k=min(body.k + body.offset, MAX_K),
            filters=filters,
            exclude_same_patient=body.exclude_same_patient,
            exclude_same_study=body.exclude_same_study,
        )[body.offset :]
        candidates = state.collection.catalog.candidate_ids(filters)
        index = state.collection.index
        total = len(candidates) if candidates is not None else (index.ntotal if index is not None else 0)
    return _response(state, "text+report", body.level, body.k, body.offset, total, hits, filters)


def _audit(request: Request, kind: str, params: FilterParams, k: int, results: int) -> None:
    """One JSON line per query: time, key id, kind, k, the filters used and their kinds, result count (never the
    query text nor a free-text filter value)."""
    filters = audit_filters(params)
    line = {
        "event": "audit",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "key": getattr(request.state, "key_id", "anonymous"),
        "kind": kind,
        "k": k,
        "filters": filters,
        "results": results,
    }
    audit.info(json.dumps(line))


def _on_loop(state: ServiceState, params: FilterParams, k: int, offset: int, level: Level, rerank: Rerank) -> bool:
    """Whether a search that needs no model runs on the event loop rather than in a worker thread: the hop costs
    more than such a search's own work (0.2-0.3 ms a request: BENCHMARKS.md issue 22, "Round 4 merged"). Only the
    bounded, local kind: image level, no re-rank, no filter nor exclusion (no candidate query), at most
    INLINE_MAX_HITS hits, a FAISS index that no change holds or waits for, over the SQLite store
    (docs/extending.md)."""
    return (
        level == "image"
        and rerank == "none"
        and k + offset <= INLINE_MAX_HITS
        and not (params.exclude_same_patient or params.exclude_same_study)
        and params.store_filters().is_empty()
        and state.collection.searches_locally()
    )


def _encode(state: ServiceState, fn: Callable[..., engine.QueryVector], *args: object) -> engine.QueryVector:
    """Embed a query, refused clearly when the model failed to load. Only the model call inside is serialised
    (`Collection.run_model`): decoding, cache hits and searches of other requests run meanwhile."""
    if state.model_error:
        raise ModelLoadError(state.model_error)
    return fn(*args)


@router.post("/search/text", response_model=SearchResponse, summary="Search by text")
async def search_text(body: TextSearchRequest, state: FreshDep, request: Request) -> Response:
    """Images most similar to a text; hits carry the calibrated sigmoid score as well as the cosine."""

    params = (body.k, body.offset, body.group_by, body.show_duplicates, body.level, body.rerank)

    def work() -> Answer:  # one trip to the thread pool per request
        query = _encode(state, engine.embed_text, state.collection, body.text)
        if body.mode == "hybrid":
            return Answer.of(_hybrid(state, query, body))
        return Answer.of(_run(state, query, body, *params))

    quick = body.mode != "hybrid" and _on_loop(state, body, body.k, body.offset, body.level, body.rerank)
    cached = engine.cached_text(state.collection, body.text) if quick else None  # a text embedded before
    answer = Answer.of(_run(state, cached, body, *params)) if cached is not None else await run_in_threadpool(work)
    _audit(request, "text", body, body.k, answer.hits)
    return answer.response()


@router.post("/search/image", response_model=SearchResponse, summary="Search by an uploaded image (+ text)")
async def search_image(
    state: FreshDep,
    request: Request,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG or TIFF")],
    params: Annotated[FilterParams, Form()],
    text: Annotated[str | None, Form(max_length=MAX_TEXT_CHARS)] = None,
    text_weight: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
    group_by: Annotated[GroupBy, Form()] = "image",
    show_duplicates: Annotated[bool, Form()] = False,
    level: Annotated[Level, Form(description=LEVEL_HELP)] = "image",
    rerank: Annotated[Rerank, Form(description=RERANK_HELP)] = "none",
    roi: Annotated[str, Form(max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)] = "",
    frame: Annotated[
        int, Form(ge=0, le=100_000, description="Multi-frame: this 1-based frame (0: the middle one)")
    ] = 0,
) -> Response:
    """Images (or series, studies) most similar to an upload, decoded exactly as indexed images are; optional
    text blends in; `roi` searches by a region of it."""
    region = parse_roi(roi) if roi else None
    data = await read_upload(file, state.settings.max_upload_bytes)

    def embed() -> engine.QueryVector:
        query = engine.embed_image(state.collection, data, roi=region, frame=frame or None)
        if text and text.strip():
            query = engine.combine(query, engine.embed_text(state.collection, text), text_weight)
        return query

    def work() -> Answer:
        query = _encode(state, embed)
        return Answer.of(_run(state, query, params, k, offset, group_by, show_duplicates, level, rerank))

    answer = await run_in_threadpool(work)
    _audit(request, answer.kind, params, k, answer.hits)
    return answer.response()


@router.get(
    "/images/{image_id}/similar",
    response_model=SearchResponse,
    summary="Pivot from a result",
    openapi_extra=openapi_extra(SimilarQuery),
)
async def similar(image_id: ImageIdDep, state: FreshDep, request: Request, query: SimilarQueryDep) -> Response:
    """Images (or series, studies) most similar to an indexed image (never the image itself, nor at series or
    study level its own case); no model needed, except for a region (`roi`), which re-reads the image's source
    and embeds that region of its indexed frame (or of `frame`: the frame a viewer shows)."""
    region = parse_roi(query.roi) if query.roi else None
    if query.frame and region is None:
        raise BadQueryError("frame goes with roi: a whole-image query by id uses the image's indexed vector")
    q = query

    def work() -> Answer:
        if region is not None:
            vector = _encode(state, engine.embed_region, state.collection, image_id, region, q.frame or None)
        else:
            vector = engine.embed_id(state.collection, image_id)
        return Answer.of(_run(state, vector, q, q.k, q.offset, q.group_by, q.show_duplicates, q.level, q.rerank))

    quick = region is None and _on_loop(state, q, q.k, q.offset, q.level, q.rerank)
    answer = work() if quick else await run_in_threadpool(work)
    _audit(request, "id", query, query.k, answer.hits)
    return answer.response()


def _similar_case(
    state: ServiceState,
    kind: Literal["series", "study"],
    uid: str,
    params: FilterParams,
    level: Level | None,
    rerank: Rerank,
    k: int,
    offset: int,
) -> Answer:
    query = embed_case(state.collection, kind, uid)
    return Answer.of(_run(state, query, params, k, offset, "image", False, level or kind, rerank))


@router.get(
    "/series/{uid}/similar",
    response_model=SearchResponse,
    summary="Search by an indexed series",
    openapi_extra=openapi_extra(CaseQuery),
)
async def similar_series(
    uid: Annotated[str, Path(max_length=64, description="An indexed SeriesInstanceUID.")],
    state: FreshDep,
    request: Request,
    query: CaseQueryDep,
) -> Response:
    """Series (or studies, images) most similar to an indexed series, from its stored vectors (no model
    needed); the series itself (its images; at study level its study) is never returned."""
    q = query
    answer = await run_in_threadpool(_similar_case, state, "series", uid, q, q.level, q.rerank, q.k, q.offset)
    _audit(request, "series", query, query.k, answer.hits)
    return answer.response()


@router.get(
    "/studies/{uid}/similar",
    response_model=SearchResponse,
    summary="Search by an indexed study",
    openapi_extra=openapi_extra(CaseQuery),
)
async def similar_study(
    uid: Annotated[str, Path(max_length=64, description="An indexed StudyInstanceUID.")],
    state: FreshDep,
    request: Request,
    query: CaseQueryDep,
) -> Response:
    """Studies (or series, images) most similar to an indexed study, from its stored vectors (no model needed);
    the study itself is never returned."""
    q = query
    answer = await run_in_threadpool(_similar_case, state, "study", uid, q, q.level, q.rerank, q.k, q.offset)
    _audit(request, "study", query, query.k, answer.hits)
    return answer.response()


@router.post("/search/case", response_model=SearchResponse, summary="Search by an uploaded case (files or a zip)")
async def search_case(
    state: FreshDep,
    request: Request,
    files: Annotated[list[UploadFile], File(description="The DICOM files of a series (or a study), or one zip.")],
    params: Annotated[FilterParams, Form()],
    level: Annotated[Level, Form(description=LEVEL_HELP)] = "series",
    rerank: Annotated[Rerank, Form(description=RERANK_HELP)] = "none",
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
) -> Response:
    """Series (or studies, images) most similar to an uploaded case: every file is decoded and embedded as the
    indexer would, and the case's vector is made as an indexed one's (the mean of its slices per series, then of
    its series). MEDSEARCH_MAX_UPLOAD_BYTES bounds the whole request."""
    limit = state.settings.max_upload_bytes
    data: list[bytes] = []
    for upload in files:
        data.append(await read_upload(upload, limit))
        if sum(map(len, data)) > limit:
            raise TooLargeError(f"uploaded case larger than {limit} bytes (MEDSEARCH_MAX_UPLOAD_BYTES)")

    def work() -> Answer:
        query = _encode(state, embed_upload, state.collection, data)
        return Answer.of(_run(state, query, params, k, offset, "image", False, level, rerank))

    answer = await run_in_threadpool(work)
    _audit(request, "case", params, k, answer.hits)
    return answer.response()
