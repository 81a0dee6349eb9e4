"""Summary routes: a comparative summary of a query and its top matches, whole or streamed as server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from api.deps import FreshDep, KeyDep, StateDep
from api.limits import read_upload
from api.schemas import StrictBody
from api.state import ServiceState
from api.strict import unknown_errors
from retrieval.errors import BadQueryError, InternalError, MedsearchError
from retrieval.summarize.base import NOTICE, Summary
from retrieval.summarize.cases import MAX_MATCH_IDS, MAX_QUERY_TEXT, build_request
from retrieval.summarize.service import DISABLED_HELP, SummaryStream
from retrieval.summarize.standin import is_standin

router = APIRouter(prefix="/v1/summaries", tags=["summaries"])
log = logging.getLogger("medsearch.api")
audit = logging.getLogger("medsearch.audit")
_END = object()


class SummaryInput(StrictBody):
    """What to compare: a query (indexed image id, uploaded file, and/or text) and the match ids, best first."""

    query_id: int | None = Field(default=None, description="An indexed image as the query (or upload a file).")
    match_ids: list[int] = Field(min_length=1, max_length=MAX_MATCH_IDS, description="Hit ids, best first.")
    scores: list[float] | None = Field(default=None, description="The hits' scores, one per match id.")
    query_text: str | None = Field(default=None, max_length=MAX_QUERY_TEXT, description="The query's text, if any.")


class SummaryResponse(BaseModel):
    """The summary, the case ids it compared (in prompt order) and the fixed not-for-diagnosis notice."""

    summary: str
    compared_ids: list[int]
    dropped_ids: list[int] = Field(description="Requested matches left out to fit the model's token budget.")
    query: Literal["id", "image", "text"]
    model: str
    notice: str = Field(examples=[NOTICE])
    cached: bool
    prompt_tokens: int | None = None


class SummaryStatus(BaseModel):
    """Whether summaries are available on this server, and with which backend and model."""

    enabled: bool
    backend: str
    model: str | None
    matches: int
    notice: str
    message: str | None = None
    standin: bool = Field(default=False, description="True when the model is the offline stand-in (garbage text).")


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SummaryInput.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "match_ids"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the query image"},
                        "match_ids": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 1,
                            "maxItems": MAX_MATCH_IDS,
                        },
                        "scores": {"type": "array", "items": {"type": "number"}},
                        "query_text": {"type": "string", "maxLength": MAX_QUERY_TEXT},
                    },
                }
            },
        },
    }
}


def _listed(values: list[str]) -> list[str]:
    """Repeated form fields or one comma-separated field alike."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


async def _read_input(request: Request, state: ServiceState) -> tuple[SummaryInput, bytes | None]:
    """JSON, or multipart with the query image as `file`; validation errors are the usual 422."""
    content_type = request.headers.get("content-type", "")
    upload: bytes | None = None
    try:
        if content_type.startswith("multipart/form-data"):
            limit = state.settings.max_upload_bytes
            form = await request.form(max_part_size=limit)
            unknown = unknown_errors("form", list(form.keys()), frozenset({"file", *SummaryInput.model_fields}))
            if unknown:
                raise RequestValidationError(unknown)
            file = form.get("file")
            if isinstance(file, UploadFile):
                upload = await read_upload(file, limit)
            raw: dict[str, Any] = {
                "match_ids": _listed([str(v) for v in form.getlist("match_ids")]),
                "scores": _listed([str(v) for v in form.getlist("scores")]) or None,
                "query_text": form.get("query_text") or None,
                "query_id": form.get("query_id") or None,
            }
            body = SummaryInput.model_validate(raw)
        elif content_type.startswith("application/json"):
            try:
                data = await request.json()
            except ValueError as exc:
                raise BadQueryError("the request body is not valid JSON") from exc
            body = SummaryInput.model_validate(data)
        else:
            raise BadQueryError("send JSON (query_id, match_ids) or multipart/form-data (file, match_ids)")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    if upload is not None and body.query_id is not None:
        raise BadQueryError("give either query_id or a file, not both")
    return body, upload


def _prepare(state: ServiceState, body: SummaryInput, upload: bytes | None) -> Any:
    state.summaries.require()  # refuse a disabled summarizer before rendering anything
    return build_request(
        state.collection,
        body.match_ids,
        limit=state.settings.summary_matches,
        query_id=body.query_id,
        query_bytes=upload,
        query_text=body.query_text,
        scores=body.scores,
    )


def _kind(body: SummaryInput, upload: bytes | None) -> Literal["id", "image", "text"]:
    return "id" if body.query_id is not None else "image" if upload is not None else "text"


def _audit(request: Request, kind: str, compared: int, cached: bool, streamed: bool) -> None:
    """One JSON line per summary: time, key id, query kind, cases compared (never images, text or ids)."""
    line = {
        "event": "audit",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "key": getattr(request.state, "key_id", "anonymous"),
        "kind": f"summary:{kind}",
        "compared": compared,
        "cached": cached,
        "streamed": streamed,
    }
    audit.info(json.dumps(line))


async def _in_executor(state: ServiceState, fn: Any, *args: Any) -> Any:
    """Summaries run in their own small pool, never in the one searches use, never under the model lock."""
    return await asyncio.wrap_future(state.summary_executor.submit(fn, *args))


@router.get("/status", response_model=SummaryStatus, summary="Are summaries available?")
async def status(state: StateDep, _key: KeyDep) -> SummaryStatus:
    """The configured backend and model (no secrets); `enabled: false` with the way to turn them on."""
    service = state.summaries
    model = service.summarizer.model if service.summarizer is not None else None
    return SummaryStatus(
        enabled=service.enabled,
        backend=service.backend,
        model=model,
        standin=is_standin(model),
        matches=state.settings.summary_matches,
        notice=NOTICE,
        message=None if service.enabled else DISABLED_HELP,
    )


@router.post("", response_model=SummaryResponse, summary="Summarize a query and its matches", openapi_extra=_BODY_DOC)
async def summarize(request: Request, state: FreshDep) -> SummaryResponse:
    """Common findings, differences and caveats of the query and its top matches (MEDSEARCH_SUMMARY_MATCHES)."""
    body, upload = await _read_input(request, state)

    def run() -> Summary:
        return state.summaries.summarize(_prepare(state, body, upload))

    summary: Summary = await _in_executor(state, run)
    _audit(request, _kind(body, upload), len(summary.compared_ids), summary.cached, streamed=False)
    return SummaryResponse(
        summary=summary.text,
        compared_ids=summary.compared_ids,
        dropped_ids=summary.dropped_ids,
        query=_kind(body, upload),
        model=summary.model,
        notice=summary.notice,
        cached=summary.cached,
        prompt_tokens=summary.prompt_tokens,
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _close(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing a finished or failed stream must not raise
            log.debug("closing a summary stream failed", exc_info=True)


@router.post(
    "/stream",
    summary="Summarize, streamed as server-sent events",
    openapi_extra=_BODY_DOC,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def summarize_stream(request: Request, state: FreshDep) -> StreamingResponse:
    """Events: `start` (compared ids, notice), `chunk` ({text}) as words come, then `done` or `error`.

    Problems found before the first word (disabled, bad ids, server down) are ordinary {code, message} errors.
    """
    body, upload = await _read_input(request, state)

    def start() -> SummaryStream:
        return state.summaries.stream(_prepare(state, body, upload))

    handle: SummaryStream = await _in_executor(state, start)
    _audit(request, _kind(body, upload), len(handle.compared_ids), handle.cached, streamed=True)
    executor = state.summary_executor
    meta = {"compared_ids": handle.compared_ids, "model": handle.model, "notice": handle.notice}

    async def events() -> AsyncIterator[bytes]:
        pending: Future[Any] | None = None
        try:
            yield _sse("start", {**meta, "query": _kind(body, upload), "cached": handle.cached})
            while True:
                pending = executor.submit(next, handle.chunks, _END)
                chunk = await asyncio.wrap_future(pending)
                pending = None
                if chunk is _END:
                    break
                yield _sse("chunk", {"text": chunk})
            yield _sse("done", {**meta, "cached": handle.cached})
        except MedsearchError as exc:
            yield _sse("error", {"code": exc.code, "message": str(exc)})
        except Exception as exc:
            log.exception("summary stream failed (%s)", type(exc).__name__)
            yield _sse("error", {"code": InternalError.code, "message": "internal error; see the server log"})
        finally:  # the reader left or the stream ended: stop the generation once no read is in flight
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _f: _close(handle.chunks))
            else:
                _close(handle.chunks)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
