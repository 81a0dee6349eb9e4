"""API keys: which routes need one, matching a bearer token, and the gate that refuses before a body is read."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.config import ServiceSettings, hash_key
from api.errors import error_response
from retrieval.errors import MedsearchError

# /v1 routes that need no key (no data in them): the page reads them before it has a key
PUBLIC_V1 = frozenset({("get", "/v1/vocabulary")})


class Unauthorized(MedsearchError):
    """Missing or wrong API key."""

    code = "unauthorized"
    status = 401
    title = "Missing or wrong API key"


def needs_key(method: str, path: str, settings: ServiceSettings) -> bool:
    """Whether a route (template or raw path) asks for the bearer key once keys are configured."""
    if path.startswith("/v1/"):
        return (method.lower(), path) not in PUBLIC_V1
    return path == "/metrics" and not settings.metrics_public


def key_id_for(authorization: str, key_ids: dict[str, str]) -> str:
    """The id of the key an `Authorization: Bearer <key>` header carries, or `Unauthorized`."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_key(token.strip())
    for known, key_id in key_ids.items():
        if hmac.compare_digest(known, digest):
            return key_id
    raise Unauthorized("unknown API key")


class KeyGateMiddleware:
    """Refuse a keyed route's request without a valid key from its headers alone: the body is never received, so
    an anonymous 60 MiB upload costs the server nothing (the route's own key check stays as a second line)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings, key_ids: dict[str, str]) -> None:
        self.app = app
        self.settings = settings
        self.key_ids = key_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key_ids and needs_key(scope["method"], scope["path"], self.settings):
            try:
                key_id_for(Headers(scope=scope).get("authorization", ""), self.key_ids)
            except Unauthorized as exc:
                response = error_response(exc.status, exc.code, str(exc))
                response.headers["connection"] = "close"  # the unread body is not worth draining
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
