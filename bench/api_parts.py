"""The service's own CPU per request, without sockets: the app driven at the ASGI level in one process.

For each kind of request (GET /healthz, a search by id, a text search) the event-loop thread's CPU time per
request (routing, middlewares, FastAPI's dependency and parameter solving, the JSON encoding, the audit line) and
the process's (plus the worker thread's search); the by-id request with its search stubbed, and with no thread hop;
and the library call alone. Run it once per source tree on the same data folder (`PYTHONPATH=<tree> python
bench/api_parts.py DATA MODEL`), as `bench/api_load.py --keep` leaves it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from machine import cpu_line

from api.app import create_app
from api.config import ServiceSettings
from retrieval import query as engine

Request = tuple[str, str, bytes, bytes, tuple[tuple[bytes, bytes], ...]]


async def call(app: Any, request: Request) -> int:
    """One request through the whole ASGI stack; its status."""
    method, path, query, body, headers = request
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def measure(app: Any, image_id: int, n: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median CPU ms per request, event-loop thread and whole process, for each kind; the library call alone."""
    text = json.dumps({"text": "chest x-ray showing right lower lobe consolidation", "k": 10}).encode()
    kinds: dict[str, Request] = {
        "GET /healthz": ("GET", "/healthz", b"", b"", ()),
        "search by id": ("GET", f"/v1/images/{image_id}/similar", b"k=10", b"", ()),
        "text search": ("POST", "/v1/search/text", b"", text, ((b"content-type", b"application/json"),)),
    }
    out: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        state = app.state.service
        while not (state.model_ready or state.model_error):  # the model loads in the background: not measured
            await asyncio.sleep(0.1)
        for name, request in kinds.items():
            out[name] = await timed(app, request, n, warmup, name)
        out["search by id, search stubbed"] = await stubbed(app, kinds["search by id"], n, warmup)
        out["search by id, no thread hop"] = await without_hop(app, kinds["search by id"], n, warmup)
        library = []
        for _ in range(n):
            t0 = time.thread_time()
            engine.search(state.collection, engine.embed_id(state.collection, image_id), k=10)
            library.append(time.thread_time() - t0)
        out["library, search by id"] = {"loop_ms": 1000 * statistics.median(library), "process_ms": float("nan")}
    return out


async def stubbed(app: Any, request: Request, n: int, warmup: int) -> dict[str, float]:
    """The by-id request with its search replaced by a ready answer: what the service alone costs (the worker
    thread hop stays). Patches the route module's `_run` and the engine's `embed_id`, as both trees name them."""
    import api.routes.search as route

    real_run, real_embed = route._run, engine.embed_id
    answers: dict[str, Any] = {}

    def ready_run(*args: Any, **kwargs: Any) -> Any:
        if "answer" not in answers:
            answers["answer"] = real_run(*args, **kwargs)
        return answers["answer"]

    def ready_embed(collection: Any, image_id: int) -> Any:
        if "vector" not in answers:
            answers["vector"] = real_embed(collection, image_id)
        return answers["vector"]

    route._run, engine.embed_id = ready_run, ready_embed  # type: ignore[assignment]
    try:
        return await timed(app, request, n, warmup, "search by id, search stubbed")
    finally:
        route._run, engine.embed_id = real_run, real_embed  # type: ignore[assignment]


async def without_hop(app: Any, request: Request, n: int, warmup: int) -> dict[str, float]:
    """The by-id request with its work run on the event loop instead of the worker thread: what the hop itself
    costs (its wake-ups, the other thread's colder caches). A measurement only: the routes keep blocking work off
    the loop (docs/extending.md). Patches the route module's `run_in_threadpool`, as both trees name it."""
    import api.routes.search as route

    real = route.run_in_threadpool

    async def inline(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    route.run_in_threadpool = inline  # type: ignore[assignment]
    try:
        return await timed(app, request, n, warmup, "search by id, no thread hop")
    finally:
        route.run_in_threadpool = real  # type: ignore[assignment]


async def timed(app: Any, request: Request, n: int, warmup: int, name: str) -> dict[str, float]:
    """`warmup` requests (each must answer 200), then median CPU ms of `n`: event-loop thread and whole process."""
    for _ in range(warmup):
        status = await call(app, request)
        assert status == 200, (name, status)
    loop, process = [], []
    for _ in range(n):
        t0, p0 = time.thread_time(), time.process_time()
        await call(app, request)
        loop.append(time.thread_time() - t0)
        process.append(time.process_time() - p0)
    return {"loop_ms": 1000 * statistics.median(loop), "process_ms": 1000 * statistics.median(process)}


def main(argv: list[str] | None = None) -> int:
    """Measure and print one table row per kind."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data_dir", type=Path)
    p.add_argument("model", type=str)
    p.add_argument("--requests", type=int, default=400, help="Timed requests per kind.")
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--image-id", type=int, default=1500)
    args = p.parse_args(argv)
    print(cpu_line())
    print(f"tree: {Path(__import__('api').__file__).resolve().parent.parent}; load average {os.getloadavg()}")
    app = create_app(ServiceSettings(data_dir=args.data_dir, model=args.model))
    figures = asyncio.run(measure(app, args.image_id, args.requests, args.warmup))
    print("| request | event-loop thread CPU ms | process CPU ms |")
    print("|---|---:|---:|")
    for name, row in figures.items():
        print(f"| {name} | {row['loop_ms']:.3f} | {row['process_ms']:.3f} |")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
