"""FastAPI dependencies as Annotated aliases: the service state and the caller's API key id.

All are `async def`: FastAPI runs a plain `def` dependency in the thread pool, one hop per dependency per request
(four on a search, each a wake-up of another thread); these do microseconds of work, and the one that may block
(a due refresh reading the store) hands only that to the pool. None depends on another: FastAPI solves a
sub-dependency again wherever it is named (cached value or not, ~30 us of event-loop CPU each), so each reads the
state and the key itself (the key checked once per request, remembered on `request.state`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from api.keys import key_id_for
from api.state import ServiceState
from retrieval.errors import NotFoundError
from retrieval.store.models import is_image_id


async def get_state(request: Request) -> ServiceState:
    """The running service's state (set by the lifespan)."""
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_key_id(request: Request) -> str:
    """The id of the caller's key ('anonymous' when no keys are configured)."""
    state: ServiceState = request.app.state.service
    if not state.key_ids:
        return "anonymous"
    known: str | None = getattr(request.state, "key_id", None)
    if known is not None:
        return known  # already checked for this request (by another dependency of the route)
    key_id = key_id_for(request.headers.get("authorization", ""), state.key_ids)
    request.state.key_id = key_id
    return key_id


KeyDep = Annotated[str, Depends(get_key_id)]


async def metrics_access(request: Request) -> None:
    """/metrics is open unless MEDSEARCH_METRICS_PUBLIC=false, then it needs a key like /v1 routes."""
    state: ServiceState = request.app.state.service
    if not state.settings.metrics_public:
        await get_key_id(request)


async def fresh_state(request: Request) -> ServiceState:
    """An authorised request's state, with images indexed since the last look made searchable."""
    await get_key_id(request)
    state: ServiceState = request.app.state.service
    if state.refresh_due():
        await run_in_threadpool(state.refresh)
    return state


FreshDep = Annotated[ServiceState, Depends(fresh_state)]


async def image_id(
    image_id: Annotated[int, Path(description="Image id (a positive 64-bit integer).")], request: Request
) -> int:
    """A path's image id, checked at the edge (after the key): an id no store can hold is simply not found."""
    await get_key_id(request)
    if not is_image_id(image_id):
        raise NotFoundError(f"no indexed image with id {image_id}")
    return image_id


ImageIdDep = Annotated[int, Depends(image_id)]
