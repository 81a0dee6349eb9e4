"""A lean keep-alive HTTP/1.1 client for load benchmarks: `http.client` on one connection per thread.

httpx costs the calling process ~0.3-0.5 ms of CPU per request (its transport, hooks and models); a benchmark whose
client shares the server's 2 cores then measures the client as much as the server. This speaks just enough of
httpx's interface (`get`/`post` with `params`, `json`, `files`, `data`; `raise_for_status`, `json()`) for the
API load benchmark's routes."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit


class LeanResponse:
    """Status and body of one response."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body

    def raise_for_status(self) -> LeanResponse:
        """Raise for a 4xx/5xx, as httpx does."""
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.content[:200]!r}")
        return self

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.content)


def _multipart(files: dict[str, tuple[str, bytes]], data: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in data.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class LeanClient:
    """One persistent connection to `base` (reconnects once if the server closed it)."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> LeanResponse:
        """Send one request and read its whole response."""
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return LeanResponse(response.status, response.read())
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, params: dict[str, Any] | None = None) -> LeanResponse:
        """GET with query parameters."""
        return self.request("GET", f"{path}?{urlencode(params)}" if params else path)

    def post(
        self,
        path: str,
        json: Any = None,
        files: dict[str, tuple[str, bytes]] | None = None,
        data: dict[str, str] | None = None,
    ) -> LeanResponse:
        """POST a JSON body, or a multipart form with files."""
        if files is not None:
            body, content_type = _multipart(files, data or {})
        else:
            body, content_type = _dumps(json).encode(), "application/json"
        return self.request("POST", path, body, {"Content-Type": content_type})

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _dumps(value: Any) -> str:
    return json.dumps(value)


class Closable(Protocol):
    """A client that can be closed."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class PerThread(Generic[C]):
    """One client per thread, made by `factory` on the thread's first call (a keep-alive connection each, as a
    real client would hold one); `close` closes them all."""

    def __init__(self, factory: Callable[[], C]) -> None:
        self.factory = factory
        self._local = threading.local()
        self._all: list[C] = []
        self._lock = threading.Lock()

    def get(self) -> C:
        """This thread's client."""
        client: C | None = getattr(self._local, "client", None)
        if client is None:
            client = self.factory()
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        """Close every client made."""
        for client in self._all:
            client.close()


class LeanClients(PerThread[LeanClient]):
    """One lean keep-alive client per thread."""

    def __init__(self, base: str) -> None:
        super().__init__(lambda: LeanClient(base))
        self.base = base
