"""The FastAPI application factory: lifespan-owned state, routers, errors, limits, metrics, the web page."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.access_log import configure_service_logs
from api.config import ServiceSettings
from api.docs_pages import install_docs
from api.errors import install_error_handlers
from api.keys import KeyGateMiddleware
from api.limits import BodyLimitMiddleware
from api.metrics import Metrics
from api.openapi import install_openapi
from api.routes import (
    export,
    feedback,
    images,
    probes,
    render,
    reports,
    search,
    summaries,
    system,
    tags,
    viewer,
    vocabulary,
)
from api.state import ServiceState
from api.strict import reject_unknown_parameters
from api.views import check_template
from api.worker_balance import WORKER_LOADS, WorkerBalance
from retrieval.collection import Collection, build_encoder
from retrieval.encoders.base import Encoder
from retrieval.summarize.factory import build_summary_service, check_settings
from retrieval.threads import ThreadPolicy, apply_encoder_threads

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("medsearch.api")


def create_app(
    settings: ServiceSettings, encoder_factory: Callable[[ServiceSettings], Encoder] | None = None
) -> FastAPI:
    """Build the app; nothing is opened until the lifespan starts."""
    check_template(settings.viewer_url_template)
    check_settings(settings)
    key_ids = settings.key_ids_by_hash()
    factory = encoder_factory or build_encoder

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = ThreadPolicy.from_settings(settings)  # searches apply theirs per thread (OpenMP is per thread)
        apply_encoder_threads(threads)
        collection = await run_in_threadpool(Collection, settings, factory)  # type: ignore[arg-type]
        state = ServiceState(
            settings=settings,
            collection=collection,
            key_ids=key_ids,
            summaries=build_summary_service(settings),
            threads=threads,
        )
        app.state.service = state
        app.state.metrics.watch(state)
        warm = asyncio.get_running_loop().run_in_executor(None, state.warm_model)
        try:
            yield
        finally:
            await warm  # a loading model cannot be interrupted; let it finish before closing
            state.summary_executor.shutdown(wait=False, cancel_futures=True)
            state.summaries.close()
            collection.close()

    app = FastAPI(
        title="medsearch",
        version="0.1.0",
        description="Similar-case search for medical images (MedSigLIP + FAISS). Errors are {code, message}.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_parameters)],  # an unknown query parameter or form field is a 422
        docs_url=None,  # served from installed assets below, not from a CDN
        redoc_url=None,
    )
    app.state.metrics = Metrics()
    app.state.metrics.install(app)
    install_error_handlers(app)
    install_openapi(app, settings)
    install_docs(app)
    # multipart framing adds a little to the file itself
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes + 64 * 1024)
    # outside the body limit, inside CORS (preflights pass; a 401 carries CORS headers so the page can read it)
    app.add_middleware(KeyGateMiddleware, settings=settings, key_ids=key_ids)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(search.router)
    app.include_router(export.router)
    app.include_router(feedback.router)
    app.include_router(images.router)
    app.include_router(viewer.router)
    app.include_router(system.router)
    app.include_router(summaries.router)
    app.include_router(render.router)
    app.include_router(vocabulary.router)
    app.include_router(tags.router)
    app.include_router(probes.router)
    app.include_router(reports.router)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of `serve --workers N` (uvicorn's factory): settings from MEDSEARCH_*, as the
    parent checked them; each worker opens the collection itself in its lifespan."""
    configure_service_logs()
    app = create_app(ServiceSettings())
    if loads := os.environ.get(WORKER_LOADS):  # `serve --workers N`: spread the busy connections (outermost)
        app.add_middleware(WorkerBalance, folder=Path(loads))
    return app
