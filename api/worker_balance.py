"""`serve --workers N`: a worker serving more than its share of the busy connections asks one to reconnect.

The kernel hands each new connection to whichever worker accepts it first, and a keep-alive connection stays there:
four connections opened at once landed 2/2 on two workers in only 6 of 30 trials (3/1: 17, 4/0: 7), and in a 4/0
split four busy clients shared one core. Each worker notes in a small file how many connections sent it a request
in the last ACTIVE_SECONDS and, on a request, at most every SHARE_SECONDS, reads its peers' files. A worker above
its share (the busy connections over N, rounded up) answers one request per connection above it with `Connection:
close`; the client reconnects (every HTTP client does so by itself), and the new connection usually lands on a less
busy worker, the busy one being in the middle of its requests. A reconnection costs the client one TCP handshake
(one network round trip).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

WORKER_LOADS = "MEDSEARCH_WORKER_LOADS"  # set by `serve --workers N` for its workers: the folder they share
WORKERS_FILE = "workers"  # the folder's file holding N, written by `serve` before the workers start
ACTIVE_SECONDS = 1.0  # a connection counts as busy this long after its last request
SHARE_SECONDS = 0.05  # how often a worker writes its count and reads its peers'
STALE_SECONDS = 2.0  # a peer's count older than this is 0 (the worker has had no request since, or is gone)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def prepare_folder(folder: Path, workers: int) -> None:
    """Write N into the folder the workers share (`serve` does this before starting them)."""
    (folder / WORKERS_FILE).write_text(str(workers))


def share(folder: Path, mine: int, me: str, now: float) -> int:
    """Write this worker's count of busy connections; the busy connections of every worker."""
    (folder / f"{me}.tmp").write_text(f"{mine} {now}")
    os.replace(folder / f"{me}.tmp", folder / me)  # a peer never reads half a line
    total = 0
    for entry in os.scandir(folder):
        if entry.name in (WORKERS_FILE, me) or entry.name.endswith(".tmp"):
            continue
        try:
            count, written = (folder / entry.name).read_text().split()
        except (OSError, ValueError):  # removed or replaced meanwhile
            continue
        if now - float(written) <= STALE_SECONDS:
            total += int(count)
    return total + mine


class WorkerBalance:
    """ASGI middleware of one worker process: counts its busy connections and sends the ones above its share away."""

    def __init__(self, app: ASGIApp, folder: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.folder = folder
        self.clock = clock
        self.me = str(os.getpid())
        self.workers = int((folder / WORKERS_FILE).read_text())  # N: fixed for the life of `serve`
        self.busy: dict[tuple[str, int], float] = {}  # connection (client address, port) -> its last request
        self.next_share = 0.0
        self.above = 0  # connections to send away (the count above the share at the last exchange)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        now = self.clock()
        connection = (str(client[0]), int(client[1]))
        self.busy[connection] = now
        if now >= self.next_share:
            self._exchange(now)
        if self.above > 0:
            self.above -= 1
            del self.busy[connection]  # it reconnects, perhaps to another worker
            send = _closing(send)
        await self.app(scope, receive, send)

    def _exchange(self, now: float) -> None:
        self.next_share = now + SHARE_SECONDS
        self.busy = {c: last for c, last in self.busy.items() if now - last <= ACTIVE_SECONDS}
        try:
            total = share(self.folder, len(self.busy), self.me, now)
        except (OSError, ValueError):  # the folder is gone (shutting down): nothing to balance
            self.above = 0
            return
        self.above = max(0, len(self.busy) - math.ceil(total / max(1, self.workers)))


def _closing(send: Send) -> Send:
    """`send` with `Connection: close` added to the response's headers."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing
