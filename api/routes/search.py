"""Search routes: by uploaded image (optionally with text), by text, and similar-to an indexed image."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.audit import audit_filters
from api.deps import FreshDep, ImageIdDep
from api.limits import read_upload
from api.schemas import FilterParams, SearchResponse, TextSearchRequest
from api.state import ServiceState
from api.views import hit_model
from retrieval import query as engine
from retrieval.errors import ModelLoadError
from retrieval.imaging.roi import parse_roi
from retrieval.query import MAX_K, MAX_TEXT_CHARS
from retrieval.vocabulary import GroupBy
from retrieval.why_empty import why_empty

router = APIRouter(prefix="/v1", tags=["search"])
ROI_PATTERN = (
    r"^$|^[0-9]{1,6},[0-9]{1,6},[0-9]{1,6},[0-9]{1,6}$"  # the schema says the form; the route checks the bounds
)
ROI_HELP = "Region of interest x,y,w,h in the source image's pixels (origin top left); at least 8x8"
audit = logging.getLogger("medsearch.audit")


def _run(
    state: ServiceState,
    query: engine.QueryVector,
    params: FilterParams,
    k: int,
    offset: int,
    group_by: GroupBy,
    show_duplicates: bool = False,
) -> SearchResponse:
    filters = params.store_filters()
    hits, total = engine.search_page(
        state.collection,
        query,
        k=min(k + offset, MAX_K),
        filters=filters,
        exclude_same_patient=params.exclude_same_patient,
        exclude_same_study=params.exclude_same_study,
        group_by=group_by,
        show_duplicates=show_duplicates,
    )
    hits = hits[offset:]
    fingerprint = state.collection.catalog.fingerprint()
    template = state.settings.viewer_url_template
    return SearchResponse(
        query=query.kind,
        k=k,
        offset=offset,
        total=total,
        hits=[hit_model(h, template, state.settings.dicomweb_url) for h in hits],
        model=fingerprint.model_id if fingerprint else None,
        standin_model=bool(fingerprint and fingerprint.standin),
        empty_reason=None if hits else why_empty(state.collection, filters, offset),
        roi=list(query.region) if query.region else None,
    )


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


def _encode(state: ServiceState, fn: Callable[..., engine.QueryVector], *args: object) -> engine.QueryVector:
    """Embed a query, refused clearly when the model failed to load. Only the model call inside is serialised
    (`Collection.run_model`): decoding, cache hits and searches of other requests run meanwhile."""
    if state.model_error:
        raise ModelLoadError(state.model_error)
    return fn(*args)


@router.post("/search/text", response_model=SearchResponse, summary="Search by text")
async def search_text(body: TextSearchRequest, state: FreshDep, request: Request) -> SearchResponse:
    """Images most similar to a text; hits carry the calibrated sigmoid score as well as the cosine."""

    def work() -> SearchResponse:  # one trip to the thread pool per request
        query = _encode(state, engine.embed_text, state.collection, body.text)
        return _run(state, query, body, body.k, body.offset, body.group_by, body.show_duplicates)

    result = await run_in_threadpool(work)
    _audit(request, "text", body, body.k, len(result.hits))
    return result


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
    roi: Annotated[str, Form(max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)] = "",
    frame: Annotated[
        int, Form(ge=0, le=100_000, description="Multi-frame: this 1-based frame (0: the middle one)")
    ] = 0,
) -> SearchResponse:
    """Images most similar to an upload, decoded exactly as indexed images are; optional text blends in; `roi`
    searches by a region of it."""
    region = parse_roi(roi) if roi else None
    data = await read_upload(file, state.settings.max_upload_bytes)

    def embed() -> engine.QueryVector:
        query = engine.embed_image(state.collection, data, roi=region, frame=frame or None)
        if text and text.strip():
            query = engine.combine(query, engine.embed_text(state.collection, text), text_weight)
        return query

    def work() -> SearchResponse:
        return _run(state, _encode(state, embed), params, k, offset, group_by, show_duplicates)

    result = await run_in_threadpool(work)
    _audit(request, result.query, params, k, len(result.hits))
    return result


@router.get("/images/{image_id}/similar", response_model=SearchResponse, summary="Pivot from a result")
async def similar(
    image_id: ImageIdDep,
    state: FreshDep,
    request: Request,
    params: Annotated[FilterParams, Query()],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    group_by: GroupBy = "image",
    show_duplicates: bool = False,
    roi: Annotated[str, Query(max_length=64, pattern=ROI_PATTERN, description=ROI_HELP)] = "",
) -> SearchResponse:
    """Images most similar to an indexed image (never the image itself); no model needed, except for a region
    (`roi`), which re-reads the image's source and embeds that region of its indexed frame."""
    region = parse_roi(roi) if roi else None

    def work() -> SearchResponse:
        if region is not None:
            query = _encode(state, engine.embed_region, state.collection, image_id, region)
            return _run(state, query, params, k, offset, group_by, show_duplicates)
        query = engine.embed_id(state.collection, image_id)
        return _run(state, query, params, k, offset, group_by, show_duplicates)

    result = await run_in_threadpool(work)
    _audit(request, "id", params, k, len(result.hits))
    return result
