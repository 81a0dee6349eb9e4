"""FastAPI dependencies as Annotated aliases: the service state and the caller's API key id."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request

from api.config import hash_key
from api.state import ServiceState
from retrieval.errors import MedsearchError, NotFoundError
from retrieval.store.models import is_image_id


class Unauthorized(MedsearchError):
    """Missing or wrong API key."""

    code = "unauthorized"
    status = 401
    title = "Missing or wrong API key"


def get_state(request: Request) -> ServiceState:
    """The running service's state (set by the lifespan)."""
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_key_id(request: Request, state: StateDep) -> str:
    """The id of the caller's key ('anonymous' when no keys are configured)."""
    if not state.key_ids:
        return "anonymous"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_key(token.strip())
    for known, key_id in state.key_ids.items():
        if hmac.compare_digest(known, digest):
            request.state.key_id = key_id
            return key_id
    raise Unauthorized("unknown API key")


KeyDep = Annotated[str, Depends(get_key_id)]


def metrics_access(request: Request, state: StateDep) -> None:
    """/metrics is open unless MEDSEARCH_METRICS_PUBLIC=false, then it needs a key like /v1 routes."""
    if not state.settings.metrics_public:
        get_key_id(request, state)


def fresh_state(state: StateDep, _key: KeyDep) -> ServiceState:
    """An authorised request's state, with images indexed since the last look made searchable."""
    state.refresh()
    return state


FreshDep = Annotated[ServiceState, Depends(fresh_state)]


def image_id(image_id: Annotated[int, Path(description="Image id (a positive 64-bit integer).")], _key: KeyDep) -> int:
    """A path's image id, checked at the edge (after the key): an id no store can hold is simply not found."""
    if not is_image_id(image_id):
        raise NotFoundError(f"no indexed image with id {image_id}")
    return image_id


ImageIdDep = Annotated[int, Depends(image_id)]
