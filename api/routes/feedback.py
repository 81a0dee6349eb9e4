"""Relevance feedback route: a search moved towards liked and away from unliked images."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep
from api.routes.search import _audit, _encode, _run
from api.schemas import FeedbackSearchRequest, SearchResponse
from retrieval import query as engine
from retrieval.errors import BadQueryError
from retrieval.feedback import Weights, check_marks, feedback_query

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search/feedback", response_model=SearchResponse, summary="Refine a search with liked / unliked images")
async def search_feedback(body: FeedbackSearchRequest, state: FreshDep, request: Request) -> SearchResponse:
    """Rocchio relevance feedback on unit vectors: normalise(alpha*q + beta*mean(like) - gamma*mean(unlike)), with
    q a text, an indexed image (`image_id`) or absent. Marked and base images are never returned; the marks are
    read from stored vectors, so only a text base needs the model."""
    if body.text is not None and body.image_id is not None:
        raise BadQueryError("give one base query: text or image_id, not both")
    check_marks(body.like, body.unlike, body.text is not None or body.image_id is not None)
    base: engine.QueryVector | None = None
    if body.text is not None:
        base = await run_in_threadpool(_encode, state, engine.embed_text, state.collection, body.text)
    elif body.image_id is not None:
        base = await run_in_threadpool(engine.embed_id, state.collection, body.image_id)
    weights = Weights(alpha=body.alpha, beta=body.beta, gamma=body.gamma)
    marks = (body.like, body.unlike)
    query = await run_in_threadpool(feedback_query, state.collection, *marks, base=base, weights=weights)
    result = await run_in_threadpool(_run, state, query, body, body.k, body.offset, body.group_by, body.show_duplicates)
    _audit(request, "feedback", body, body.k, len(result.hits))
    return result
