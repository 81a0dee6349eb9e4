"""Size limits: the request-body cap enforced while the body streams in, and the per-upload cap."""

from __future__ import annotations

import json

from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrieval.errors import TooLargeError


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """An uploaded file's bytes, refused with `too_large` past `limit` (at most limit + 1 bytes are read) and as
    invalid (422, as the schema's minLength says) when empty."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"upload larger than {limit} bytes (MEDSEARCH_MAX_UPLOAD_BYTES)")
    if not data:
        msg = "the uploaded file is empty: send a DICOM, PNG, JPEG or TIFF file"
        raise RequestValidationError([{"type": "too_short", "loc": ("body", "file"), "msg": msg}])
    return data


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps({"code": TooLargeError.code, "message": f"request body larger than {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answer 413 as soon as a body passes `limit` bytes; the rest is never read or spooled to disk."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reject(send, self.limit)
            return
        received = 0
        rejected = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, rejected, started
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    rejected = True
                    if not started:
                        started = True
                        await _reject(send, self.limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return  # the 413 went out already; drop whatever the app answers to the disconnect
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
