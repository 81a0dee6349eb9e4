"""Errors as {code, message} JSON with the right HTTP status; never a stack trace."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.errors import InternalError, MedsearchError

log = logging.getLogger("medsearch.api")


@dataclass(frozen=True)
class ApiError:
    """An error code the API answers with itself (not raised by the library)."""

    status: int
    title: str


API_ERRORS = {
    "validation_error": ApiError(422, "Invalid request"),
    "method_not_allowed": ApiError(405, "Method not allowed"),
    "http_error": ApiError(400, "HTTP error"),
    "not_ready": ApiError(503, "Not ready"),
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The one error shape every route returns."""
    return JSONResponse(status_code=status, content={"code": code, "message": message})


def install_error_handlers(app: FastAPI) -> None:
    """Translate domain, validation and HTTP errors; hide anything unexpected behind a 500."""

    @app.exception_handler(MedsearchError)
    async def _domain(_request: Request, exc: MedsearchError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. `Allow` on 405
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error (%s)", type(exc).__name__)
        return error_response(InternalError.status, InternalError.code, "internal error; see the server log")
