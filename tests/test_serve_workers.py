"""`serve --workers N` really starts N processes, each answering searches on the one port by itself."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from tests.conftest import SAMPLES, make_settings
from tests.service import is_ready, running_server, service_env

pytestmark = pytest.mark.e2e  # a live `medsearch serve` with worker processes (not in `make test-fast`)


def _workers(pid: int) -> list[int]:
    """The serving children of uvicorn's parent process (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


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


def test_two_workers_each_answer(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "data"
    collection = Collection(make_settings(data, tiny_model))
    try:
        assert run_index(collection, [SAMPLES], IndexOptions(workers=0)).indexed > 0
    finally:
        collection.close()
    env = service_env(data, tiny_model)
    with running_server(env, tmp_path / "logs", is_ready, args=("--workers", "2")) as server:
        deadline = time.monotonic() + 120
        while len(workers := _workers(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, server.stderr()[-2000:]
            time.sleep(0.2)
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
