"""A loopback HTTP server that misbehaves like a broken OpenAI-compatible summary server (for the tests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_REPLY = {"choices": [{"message": {"role": "assistant", "content": "Both show a normal head."}}]}


def _chunk(text: str, finish: str | None = None) -> bytes:
    choice: dict[str, Any] = {"delta": {"content": text} if text else {}, "index": 0, "finish_reason": finish}
    return f"data: {json.dumps({'choices': [choice]})}\n\n".encode()


class Misbehaving:
    """A loopback HTTP server whose first path segment picks the failure."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream_head(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

            def do_POST(self) -> None:
                mode = self.path.strip("/").split("/")[0]
                outer.hits[mode] = outer.hits.get(mode, 0) + 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stream = bool(body.get("stream"))
                if mode == "s500":
                    self._send(500, b'{"error": "boom"}')
                elif mode == "s401":
                    self._send(401, b'{"error": "bad key"}')
                elif mode == "flaky" and outer.hits[mode] == 1:
                    self._send(503, b"busy")
                elif mode == "hang":
                    outer.release.wait(60)
                elif mode == "badjson":
                    self._send(200, b"{this is not json")
                elif mode == "nochoices":
                    self._send(200, b'{"object": "error"}')
                elif stream and mode in ("brokensse", "truncated", "stall"):
                    self._stream_head()
                    self.wfile.write(_chunk("Common findings: "))
                    self.wfile.flush()
                    if mode == "brokensse":
                        self.wfile.write(b'data: {"choices": [{"delta": {"content": "bro\n\n')
                    elif mode == "stall":
                        outer.release.wait(60)
                elif stream:
                    self._stream_head()
                    for word in ("Both ", "show ", "a normal head."):
                        self.wfile.write(_chunk(word))
                    self.wfile.write(_chunk("", "stop"))
                else:
                    self._send(200, json.dumps(GOOD_REPLY).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/v1"
