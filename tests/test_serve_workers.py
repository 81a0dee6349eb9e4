"""`serve --workers N` really starts N processes, each answering searches on the one port by itself."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from tests.conftest import SAMPLES, make_settings
from tests.service import Server, is_ready, running_server, service_env, worker_holding, worker_pids

pytestmark = pytest.mark.e2e  # a live `medsearch serve` with worker processes (not in `make test-fast`)


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """These processes frozen (SIGSTOP) for the block: only the others can accept a connection."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _answers(url: str, deadline: float) -> httpx.Response:
    """A search by id on a new connection, retried while the worker still starts."""
    while True:
        with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as client:  # a new connection each time
            ready = client.get("/readyz")
            if ready.status_code == 200:
                return client.get("/v1/images/1/similar", params={"k": 3})
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.3)


@contextlib.contextmanager
def two_workers(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[Server, list[int]]]:
    """`serve --workers 2` on an indexed collection, once both worker processes run: (server, their pids)."""
    data = tmp_path / "data"
    collection = Collection(make_settings(data, tiny_model))
    try:
        assert run_index(collection, [SAMPLES], IndexOptions(workers=0)).indexed > 0
    finally:
        collection.close()
    with running_server(service_env(data, tiny_model), tmp_path / "logs", is_ready, args=("--workers", "2")) as server:
        deadline = time.monotonic() + 120
        while len(workers := worker_pids(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, server.stderr()[-2000:]
            time.sleep(0.2)
        yield server, workers


def test_two_workers_each_answer(tmp_path: Path, tiny_model: Path) -> None:
    with two_workers(tmp_path, tiny_model) as (server, workers):
        assert len(workers) == 2, workers
        hits = []
        for alive in workers:  # the other worker frozen: this one alone accepts and answers
            with stopped([w for w in workers if w != alive]):
                response = _answers(server.url, time.monotonic() + 120)
            assert response.status_code == 200, response.text
            hits.append([h["id"] for h in response.json()["hits"]])
        assert hits[0] == hits[1] and hits[0]  # the same collection behind both
        started = {line for line in server.stderr().splitlines() if "Started server process" in line}
        assert len(started) == 2, server.stderr()[-2000:]  # and neither was killed as hung and replaced


def test_four_busy_connections_on_one_worker_end_up_two_on_each(tmp_path: Path, tiny_model: Path) -> None:
    """The kernel hands connections to whichever worker accepts first, and keep-alive keeps them there: here all four
    land on one worker (the other frozen while they connect). Under load, that worker asks two to reconnect
    (`Connection: close`, api/worker_balance.py) and they land on the other: two busy connections per core."""
    with two_workers(tmp_path, tiny_model) as (server, workers):
        for alive in workers:  # both workers up and answering
            with stopped([w for w in workers if w != alive]):
                assert _answers(server.url, time.monotonic() + 120).status_code == 200
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(4)]
        path = "/v1/images/1/similar?k=3"

        def ask(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            return response

        def kept(connection: http.client.HTTPConnection) -> int:
            """Ask until the answer keeps the connection open; how many answers closed it."""
            closed = 0
            while ask(connection).getheader("connection") == "close":
                closed += 1
            return closed

        with stopped(workers[1:]):  # all four connect and are answered by the first worker (a reconnection too)
            for connection in connections:
                kept(connection)
        first = {worker_holding(c.sock.getsockname()[1], server.port, workers) for c in connections}
        assert first == {workers[0]}
        moved = [0] * 4

        def load(n: int) -> None:
            until = time.monotonic() + 4.0
            while time.monotonic() < until:
                moved[n] += ask(connections[n]).getheader("connection") == "close"
            moved[n] += kept(connections[n])  # end on a connection that stays

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        holders = [worker_holding(c.sock.getsockname()[1], server.port, workers) for c in connections]
        for connection in connections:
            connection.close()
        assert sorted(holders.count(w) for w in workers) == [2, 2], (holders, moved)
        assert sum(moved) >= 2  # at least the two sent away (a reconnection may land on the busy worker again)
