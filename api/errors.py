"""Errors as {code, message} JSON with the right HTTP status; never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.errors import MedsearchError

log = logging.getLogger("medsearch.api")

STATUS_BY_CODE = {
    "bad_query": 400,
    "unsafe_path": 400,
    "unauthorized": 401,
    "not_found": 404,
    "too_large": 413,
    "decode_error": 415,
    "no_pixel_data": 415,
    "unsupported_format": 415,
    "model_unavailable": 503,
    "model_mismatch": 503,
    "index_busy": 503,
    "not_ready": 503,
    "dicomweb_error": 502,
    "summarizer_disabled": 501,
    "summarizer_unavailable": 503,
    "summary_timeout": 504,
    "summary_bad_reply": 502,
    "summary_too_long": 400,
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The one error shape every route returns."""
    return JSONResponse(status_code=status, content={"code": code, "message": message})


def install_error_handlers(app: FastAPI) -> None:
    """Translate domain, validation and HTTP errors; hide anything unexpected behind a 500."""

    @app.exception_handler(MedsearchError)
    async def _domain(_request: Request, exc: MedsearchError) -> JSONResponse:
        return error_response(STATUS_BY_CODE.get(exc.code, 500), exc.code, str(exc))

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
        return error_response(500, "internal_error", "internal error; see the server log")
