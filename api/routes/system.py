"""Operational routes: stats, health, readiness, Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import FreshDep, StateDep, metrics_access
from api.errors import error_response
from api.state import WITHOUT_MODEL
from retrieval import cpu
from retrieval.privacy import shown_model
from retrieval.threads import thread_report
from retrieval.vocabulary import StatsReport, encoder_facts, stats_report

router = APIRouter(tags=["system"])


def without_model_path(message: str, ref: str) -> str:
    """A public message with the model's local path replaced by its shown name."""
    shown = shown_model(ref)
    for spelled in sorted({ref, str(Path(ref).expanduser()), str(Path(ref).expanduser().resolve())}, key=len)[::-1]:
        if spelled != shown:
            message = message.replace(spelled, shown)
    return message


@router.get("/v1/stats", summary="Collection statistics")
async def stats(state: FreshDep) -> StatsReport:
    """Counts of images, vectors, studies, sources, failures; images by modality; the index; the model."""
    return await run_in_threadpool(stats_report, state.collection)


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: index loaded, vector count, model")
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the model is loaded and the index open; 503 with the reason otherwise."""
    await run_in_threadpool(state.refresh, True)
    fingerprint = state.collection.catalog.fingerprint()
    with state.collection.leased_index() as index:  # one index for both reads, even if a refresh swaps it
        body = {
            "ready": state.model_ready and state.model_error is None,
            "model_loaded": state.model_ready,
            "model": shown_model(state.collection.settings.model),  # MEDSEARCH_MODEL, else the collection's own
            **encoder_facts(state.collection),  # encoder, encoder_runs (read back), encoder_warning
            "cpu_features": sorted(cpu.cpu_features()),
            "index_loaded": index is not None,
            "vectors": index.ntotal if index is not None else 0,
            "standin_model": bool(fingerprint and fingerprint.standin),
            "threads": thread_report(state.threads, index),
        }
    if state.model_error:
        message = without_model_path(state.model_error, state.collection.settings.model)
        return error_response(503, "model_unavailable", f"{WITHOUT_MODEL} {message}")
    if not state.model_ready:
        return JSONResponse(status_code=503, content={**body, "code": "not_ready", "message": "model loading"})
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=[Depends(metrics_access)])
async def metrics(request: Request) -> Response:
    """Request counts and latency histograms per route."""
    rendered: Response = request.app.state.metrics.render()
    return rendered
