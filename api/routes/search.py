"""Search routes: by uploaded image (optionally with text), by text, and similar-to an indexed image."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.schemas import FilterParams, SearchResponse, TextSearchRequest
from api.state import ServiceState
from api.views import hit_model
from retrieval import search as engine
from retrieval.errors import MedsearchError, TooLargeError
from retrieval.search import MAX_K, MAX_TEXT_CHARS
from retrieval.store.repo import Filters
from retrieval.why_empty import why_empty

router = APIRouter(prefix="/v1", tags=["search"])
audit = logging.getLogger("medsearch.audit")
GroupBy = Literal["image", "study", "series"]


def _filters(params: FilterParams) -> Filters:
    return Filters(
        modality=params.modality,
        body_part=params.body_part,
        date_from=params.date_from,
        date_to=params.date_to,
        label=params.label,
    )


def _run(
    state: ServiceState,
    query: engine.QueryVector,
    params: FilterParams,
    k: int,
    offset: int,
    group_by: GroupBy,
    show_duplicates: bool = False,
) -> SearchResponse:
    filters = _filters(params)
    hits = engine.search(
        state.collection,
        query,
        k=min(k + offset, MAX_K),
        filters=filters,
        exclude_same_patient=params.exclude_same_patient,
        exclude_same_study=params.exclude_same_study,
        group_by=group_by,
        show_duplicates=show_duplicates,
    )[offset:]
    fingerprint = state.collection.catalog.fingerprint()
    template = state.settings.viewer_url_template
    return SearchResponse(
        query=query.kind,
        k=k,
        offset=offset,
        hits=[hit_model(h, template, state.settings.dicomweb_url) for h in hits],
        model=fingerprint.model_id if fingerprint else None,
        standin_model=bool(fingerprint and fingerprint.standin),
        empty_reason=None if hits else why_empty(state.collection, filters, offset),
    )


def _audit(request: Request, kind: str, params: FilterParams, k: int, results: int) -> None:
    """One JSON line per query: time, key id, kind, k, filters, result count (never the query text)."""
    fields = set(FilterParams.model_fields)
    filters = {
        name: value
        for name, value in params.model_dump(mode="json", include=fields).items()
        if value is not None and value != [] and value is not False
    }
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


def _filter_params(
    modality: list[str] | None,
    body_part: list[str] | None,
    date_from: date | None,
    date_to: date | None,
    label: str | None,
    exclude_same_patient: bool,
    exclude_same_study: bool,
) -> FilterParams:
    """Filters given as form fields or query parameters (absent lists become empty)."""
    return FilterParams(
        modality=modality or [],
        body_part=body_part or [],
        date_from=date_from,
        date_to=date_to,
        label=label,
        exclude_same_patient=exclude_same_patient,
        exclude_same_study=exclude_same_study,
    )


def _encode(state: ServiceState, fn: Callable[..., engine.QueryVector], *args: object) -> engine.QueryVector:
    """Run a model call: one at a time, and refused clearly when the model failed to load."""
    if state.model_error:
        raise MedsearchError(state.model_error, code="model_unavailable")
    with state.model_lock:
        return fn(*args)


@router.post("/search/text", response_model=SearchResponse, summary="Search by text")
async def search_text(body: TextSearchRequest, state: FreshDep, request: Request) -> SearchResponse:
    """Images most similar to a text; hits carry the calibrated sigmoid score as well as the cosine."""
    query = await run_in_threadpool(_encode, state, engine.embed_text, state.collection, body.text)
    result = await run_in_threadpool(_run, state, query, body, body.k, body.offset, body.group_by, body.show_duplicates)
    _audit(request, "text", body, body.k, len(result.hits))
    return result


@router.post("/search/image", response_model=SearchResponse, summary="Search by an uploaded image (+ text)")
async def search_image(
    state: FreshDep,
    request: Request,
    file: Annotated[UploadFile, File(description="DICOM, PNG, JPEG or TIFF")],
    text: Annotated[str | None, Form(max_length=MAX_TEXT_CHARS)] = None,
    text_weight: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Form(ge=0, le=10_000)] = 0,
    modality: Annotated[list[str] | None, Form()] = None,
    body_part: Annotated[list[str] | None, Form()] = None,
    date_from: Annotated[date | None, Form()] = None,
    date_to: Annotated[date | None, Form()] = None,
    label: Annotated[str | None, Form(max_length=200)] = None,
    exclude_same_patient: Annotated[bool, Form()] = False,
    exclude_same_study: Annotated[bool, Form()] = False,
    group_by: Annotated[GroupBy, Form()] = "image",
    show_duplicates: Annotated[bool, Form()] = False,
) -> SearchResponse:
    """Images most similar to an upload, decoded exactly as indexed images are; optional text blends in."""
    limit = state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"upload larger than {limit} bytes (MEDSEARCH_MAX_UPLOAD_BYTES)")
    params = _filter_params(modality, body_part, date_from, date_to, label, exclude_same_patient, exclude_same_study)

    def embed() -> engine.QueryVector:
        query = engine.embed_image(state.collection, data)
        if text and text.strip():
            query = engine.combine(query, engine.embed_text(state.collection, text), text_weight)
        return query

    query = await run_in_threadpool(_encode, state, embed)
    result = await run_in_threadpool(_run, state, query, params, k, offset, group_by, show_duplicates)
    _audit(request, query.kind, params, k, len(result.hits))
    return result


@router.get("/images/{image_id}/similar", response_model=SearchResponse, summary="Pivot from a result")
async def similar(
    image_id: int,
    state: FreshDep,
    request: Request,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    modality: Annotated[list[str] | None, Query()] = None,
    body_part: Annotated[list[str] | None, Query()] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    exclude_same_patient: bool = False,
    exclude_same_study: bool = False,
    group_by: GroupBy = "image",
    show_duplicates: bool = False,
) -> SearchResponse:
    """Images most similar to an indexed image (never the image itself); no model needed."""
    params = _filter_params(modality, body_part, date_from, date_to, label, exclude_same_patient, exclude_same_study)
    query = await run_in_threadpool(engine.embed_id, state.collection, image_id)
    result = await run_in_threadpool(_run, state, query, params, k, offset, group_by, show_duplicates)
    _audit(request, "id", params, k, len(result.hits))
    return result
