"""Search latency with summaries off vs on-and-busy (in-process transformers, remote OpenAI-compatible), loopback."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; the models are built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import httpx
from api_load import Stats, ThreadClients, grow, running_server, summarise, timed_loop
from api_load_queries import TEXTS
from machine import cpu_facts, cpu_line
from synthetic import cluster_centres

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.labels import load_labels
from retrieval.settings import Settings
from retrieval.summarize.standin import build_standin_summarizer

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
WIDTH = 1152
ROUTES = ("search-by-id", "text")


# -- a slow OpenAI-compatible server: a summary in flight for `seconds`, a word every `gap` -------------------


def slow_chat_server(words: int, gap: float) -> ThreadingHTTPServer:
    """Streams `words` chunks `gap` seconds apart (like a busy GPU server); stopped by shutdown()."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i in range(words):
                    time.sleep(gap)
                    chunk = {"choices": [{"delta": {"content": f"word{i} "}, "index": 0, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                end = {"choices": [{"delta": {}, "index": 0, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\n".encode())
            except OSError:  # the client went away
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- background summary load ----------------------------------------------------------------------------------


@contextmanager
def busy_summaries(base: str, ids: list[int], streams: int) -> Iterator[dict[str, int]]:
    """`streams` clients asking for streamed summaries back to back until the block ends."""
    stop = threading.Event()
    counts = {"summaries": 0, "chunks": 0, "errors": 0}
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=120.0) as client:
            i = offset
            while not stop.is_set():
                query = ids[i % len(ids)]
                matches = [x for x in ids if x != query][:4]
                i += 1
                try:
                    with client.stream(
                        "POST", "/v1/summaries/stream", json={"query_id": query, "match_ids": matches}
                    ) as response:
                        response.raise_for_status()
                        chunks = sum(1 for line in response.iter_lines() if line.startswith("event: chunk"))
                    with lock:
                        counts["summaries"] += 1
                        counts["chunks"] += chunks
                except httpx.HTTPError:
                    with lock:
                        counts["errors"] += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let the summaries start before timing
    try:
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=130)


@contextmanager
def cpu_burner() -> Iterator[None]:
    """One CPU-bound process for the block (stopped by its PID)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


def markdown(results: dict[str, dict[str, Stats]], busy: dict[str, dict[str, int]]) -> str:
    """One row per window and route; ratios to the summarizer-off idle server and to the same server idle."""
    lines = [
        "| window | route | requests | p50 ms | p99 ms | p50 / off idle | p99 / off idle | p50 / same idle "
        "| p99 / same idle | summaries finished |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for window, routes in results.items():
        server = window.split(",")[0]
        for route, st in routes.items():
            off = results["off, idle"][route]
            same = results[f"{server}, idle"][route]
            done = f"{busy[window]['summaries']} ({busy[window]['errors']} errors)" if window.endswith("busy") else "–"
            lines.append(
                f"| {window} | {route} | {st.requests} | {st.p50_ms:.2f} | {st.p99_ms:.2f} | "
                f"{st.p50_ms / off.p50_ms:.2f} | {st.p99_ms / off.p99_ms:.2f} | "
                f"{st.p50_ms / same.p50_ms:.2f} | {st.p99_ms / same.p99_ms:.2f} | {done} |"
            )
    return "\n".join(lines)


# -- the run ---------------------------------------------------------------------------------------------------


def build_data(root: Path, size: int) -> tuple[Path, Path, Path, list[int]]:
    """A SigLIP stand-in at MedSigLIP's width, data/samples indexed (real, renderable) plus synthetic rows."""
    siglip = build_standin_model(root / "siglip", width=WIDTH, layers=1, heads=16)
    gemma = build_standin_summarizer(root / "gemma")
    data = root / "data"
    collection = Collection(Settings(data_dir=data, model=str(siglip), workers=0))
    try:
        run_index(collection, [SAMPLES], IndexOptions(labels=load_labels(SAMPLES / "labels.csv")))
        ids = [int(i) for i in collection.catalog.all_ids()]
        grow(collection, size, 0, cluster_centres(0, 64, WIDTH))
    finally:
        collection.close()
    return siglip, gemma, data, ids


def search_calls(clients: ThreadClients, ids: list[int], k: int) -> dict[str, Callable[[int], object]]:
    def by_id(i: int) -> object:
        response = clients.get().get(f"/v1/images/{ids[i % len(ids)]}/similar", params={"k": k})
        response.raise_for_status()
        return response

    def by_text(i: int) -> object:
        response = clients.get().post("/v1/search/text", json={"text": TEXTS[i % len(TEXTS)], "k": k})
        response.raise_for_status()
        return response

    return {"search-by-id": by_id, "text": by_text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10_000, help="indexed vectors (10 real + synthetic)")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per route, config and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=2, help="summaries kept in flight while busy")
    parser.add_argument("--new-tokens", type=int, default=64, help="summary length (transformers stand-in)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    print(cpu_line(), flush=True)

    root = Path(tempfile.mkdtemp(prefix="bench-summary-"))
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()[0]
    try:
        siglip, gemma, data, sample_ids = build_data(root, args.size)
        slow = slow_chat_server(words=40, gap=0.05)
        configs: dict[str, dict[str, str]] = {
            "off": {},
            "transformers": {
                "MEDSEARCH_SUMMARIZER": "transformers",
                "MEDSEARCH_SUMMARY_MODEL": str(gemma),
                "MEDSEARCH_SUMMARY_MAX_NEW_TOKENS": str(args.new_tokens),
                "MEDSEARCH_SUMMARY_CACHE_SIZE": "0",
            },
            "openai": {
                "MEDSEARCH_SUMMARIZER": "openai",
                "MEDSEARCH_SUMMARY_URL": f"http://127.0.0.1:{slow.server_address[1]}/v1",
                "MEDSEARCH_SUMMARY_CACHE_SIZE": "0",
            },
        }
        # (window name, server, what runs meanwhile): "burn" is a control, a CPU-bound process next to an
        # idle server, to tell "a summary is in flight" apart from "the CPU is busy".
        windows = [
            ("off, idle", "off", "idle"),
            ("off, CPU-burning neighbour", "off", "burn"),
            ("transformers, idle", "transformers", "idle"),
            ("transformers, busy", "transformers", "busy"),
            ("openai, idle", "openai", "idle"),
            ("openai, busy", "openai", "busy"),
        ]
        with ExitStack() as stack:
            bases: dict[str, str] = {}
            for n, (name, env) in enumerate(configs.items()):
                folder = root / f"data-{n}"
                shutil.copytree(data, folder)  # one folder per server, none shared
                base, _pid = stack.enter_context(running_server(folder, siglip, root / f"server-{n}.log", 300, env))
                bases[name] = base
            clients = {name: ThreadClients(base) for name, base in bases.items()}
            for c in clients.values():
                stack.callback(c.close)
            calls = {name: search_calls(clients[name], sample_ids, args.k) for name in configs}
            for name in configs:  # warm-up, untimed
                for route in calls[name].values():
                    for i in range(50):
                        route(i)
            raw: dict[str, dict[str, list[float]]] = {w[0]: {r: [] for r in ROUTES} for w in windows}
            errors: dict[str, int] = {w[0]: 0 for w in windows}
            busy: dict[str, dict[str, int]] = {w[0]: {"summaries": 0, "chunks": 0, "errors": 0} for w in windows}
            for round_no in range(args.rounds):
                shift = round_no % len(windows)
                for window, server, mode in windows[shift:] + windows[:shift]:  # rotate: no fixed first
                    with ExitStack() as load:
                        counts = None
                        if mode == "busy":
                            counts = load.enter_context(busy_summaries(bases[server], sample_ids, args.streams))
                        elif mode == "burn":
                            load.enter_context(cpu_burner())
                        for route, call in calls[server].items():
                            stats, latencies = timed_loop(call, 1, args.seconds, 100_000, offset=round_no * 1000)
                            raw[window][route] += latencies
                            errors[window] += stats.errors
                    if counts is not None:
                        for key in counts:
                            busy[window][key] += counts[key]
                    print(f"round {round_no + 1}/{args.rounds} {window}: done (load {os.getloadavg()[0]:.1f})")
        slow.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    results = {w: {r: summarise(lat, 0, sum(lat)) for r, lat in routes.items()} for w, routes in raw.items()}
    table = markdown(results, busy)
    load_end = os.getloadavg()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, {machine}\n{cpu_line()}")
    print(f"load average {load_start:.1f} -> {load_end:.1f}; search errors {errors}\n")
    print(table)
    if args.json:
        payload = {
            "started": started.isoformat(),
            **cpu_facts(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "load": [load_start, load_end],
            "results": {n: {r: asdict(s) for r, s in routes.items()} for n, routes in results.items()},
            "busy": busy,
            "errors": errors,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
