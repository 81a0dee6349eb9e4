"""A worker of `serve --workers N` above its share of the busy connections asks that many to reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from api.worker_balance import STALE_SECONDS, WorkerBalance, prepare_folder

PEER = "999999"  # another worker's count file


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _request(balance: WorkerBalance, port: int) -> list[tuple[bytes, bytes]]:
    """One request on the connection from client port `port`: the headers of its response."""
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "client": ("127.0.0.1", port), "path": "/v1/stats"}
    asyncio.run(balance(scope, receive, send))
    assert sent[1]["body"] == b"{}"  # the response itself is untouched
    return list(sent[0]["headers"])


def _closed(headers: list[tuple[bytes, bytes]]) -> bool:
    connection = [value for name, value in headers if name == b"connection"]
    assert len(connection) == 1, headers
    return connection[0] == b"close"


def _peer(folder: Path, busy: int, at: float) -> None:
    (folder / PEER).write_text(f"{busy} {at}")


@pytest.fixture
def balance(tmp_path: Path) -> tuple[WorkerBalance, Clock, Path]:
    prepare_folder(tmp_path, 2)
    clock = Clock()
    return WorkerBalance(_app, tmp_path, clock=clock), clock, tmp_path


def test_four_busy_connections_on_one_of_two_workers_send_two_away(
    balance: tuple[WorkerBalance, Clock, Path],
) -> None:
    middleware, clock, folder = balance
    _peer(folder, 0, clock.now)
    assert not any(_closed(_request(middleware, port)) for port in (5001, 5002, 5003, 5004))  # before an exchange
    clock.now += 0.06  # the next request exchanges counts: 4 here, 0 there, a share of 2
    closed = [_closed(_request(middleware, port)) for port in (5001, 5002, 5003, 5004)]
    assert closed == [True, True, False, False]
    assert (folder / middleware.me).read_text().split()[0] == "4"  # what the peer reads
    # the two reconnected to the peer; the two left here are within the share from now on
    _peer(folder, 2, clock.now)
    for _ in range(3):
        clock.now += 0.06
        assert not any(_closed(_request(middleware, port)) for port in (5003, 5004))
    assert (folder / middleware.me).read_text().split()[0] == "2"


def test_balanced_workers_keep_their_connections(balance: tuple[WorkerBalance, Clock, Path]) -> None:
    middleware, clock, folder = balance
    _peer(folder, 2, clock.now)
    for _ in range(4):
        clock.now += 0.06
        assert not any(_closed(_request(middleware, port)) for port in (6001, 6002))


def test_a_silent_peer_counts_nothing_and_idle_connections_stop_counting(
    balance: tuple[WorkerBalance, Clock, Path],
) -> None:
    middleware, clock, folder = balance
    _peer(folder, 3, clock.now - STALE_SECONDS - 1)  # no request there for a while (or the worker is gone)
    for port in (7001, 7002):
        _request(middleware, port)
    clock.now += 0.06
    # 2 busy here, the peer's stale 3 counted as 0: a share of 1, one connection sent away
    assert [_closed(_request(middleware, port)) for port in (7001, 7002)] == [True, False]
    clock.now += 5.0  # 7002 has sent nothing for 5 s: only the new connection counts (alone: its own share)
    _peer(folder, 0, clock.now)
    assert not _closed(_request(middleware, 7003))


def test_other_scopes_pass_through(balance: tuple[WorkerBalance, Clock, Path]) -> None:
    middleware, _, folder = balance
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    passing = WorkerBalance(app, folder)
    asyncio.run(passing({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert not (folder / middleware.me).exists()  # nothing counted, nothing written
