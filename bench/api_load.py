"""API load benchmark: p50/p99 latency and requests/s of the REST API vs the bare library call, loopback."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; the model is built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import httpx
import numpy as np
import numpy.typing as npt
from alembic import command
from api_load_queries import ROUTE_NAMES, SAMPLE, Route, make_routes
from lean_http import LeanClients, PerThread
from machine import cpu_facts, cpu_line
from sqlalchemy import func, insert, select, text
from synthetic import cluster_centres, synthetic_rows

from indexer.pipeline import IndexOptions, run_index
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.settings import Settings
from retrieval.store.db import make_engine
from retrieval.store.migrate import alembic_config
from retrieval.store.models import Image, Vector

WIDTH = 1152  # MedSigLIP-448's embedding width, so FAISS and SQLite blob costs are those of the real model
MODEL_ARCH = "random SigLIP stand-in: vision width 1152, 1 layer, 16 heads; text tower width 32, 1 layer"
SYNTHETIC_BASE = 1000  # synthetic rows take ids from here; the real sample DICOMs are indexed first (ids 1..10)
MODALITIES = ("CR", "CT", "MR", "US", "MG", "DX")
BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "KNEE", "BREAST", "SPINE")


@dataclass
class Stats:
    """Latencies of one timed loop, summarised."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    rps: float
    cpu_ms: float = 0.0  # CPU time per request of the process doing the work (server, or library caller)
    client_cpu_ms: float = 0.0  # CPU time per request of this benchmark process (the HTTP client, for API loops)


@dataclass
class Scenario:
    """One route at one collection size: the library baseline and each server at each concurrency."""

    size: int
    route: str
    k: int
    library: Stats
    api: dict[str, Stats] = field(default_factory=dict)  # "after c=1", "before c=4", ...
    ratio_p50: dict[str, float] = field(default_factory=dict)  # API p50 / library p50
    ratio_rps: dict[str, float] = field(default_factory=dict)  # API req/s / library req/s (1 thread)
    mismatches: dict[str, int] = field(default_factory=dict)  # queries whose API hit ids differ from the library's
    checked: int = 0


def summarise(
    latencies: list[float], errors: int, seconds: float, cpu_seconds: float = 0.0, client_cpu_seconds: float = 0.0
) -> Stats:
    """p50/p99/mean in ms and throughput from per-request latencies in seconds."""
    arr = np.asarray(latencies, dtype=np.float64) * 1000.0 if latencies else np.zeros(1)
    return Stats(
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        p50_ms=round(float(np.percentile(arr, 50)), 3),
        p99_ms=round(float(np.percentile(arr, 99)), 3),
        mean_ms=round(float(arr.mean()), 3),
        rps=round(len(latencies) / seconds, 1) if seconds > 0 else 0.0,
        cpu_ms=round(1000.0 * cpu_seconds / len(latencies), 3) if latencies else 0.0,
        client_cpu_ms=round(1000.0 * client_cpu_seconds / len(latencies), 3) if latencies else 0.0,
    )


# -- collection ------------------------------------------------------------------------------------


def synthetic_row(i: int, day: int) -> dict[str, Any]:
    """An images-table row that never existed on disk (no thumbnail is ever asked for)."""
    study, series = i // 8, i // 2
    return {
        "id": SYNTHETIC_BASE + i,
        "instance_key": f"synthetic://{i}#1",
        "kind": "dicom",
        "sop_instance_uid": f"1.2.826.0.1.3680043.10.999.3.{i}",
        "study_instance_uid": f"1.2.826.0.1.3680043.10.999.1.{study}",
        "series_instance_uid": f"1.2.826.0.1.3680043.10.999.2.{series}",
        "frame": 1,
        "number_of_frames": 1,
        "modality": MODALITIES[study % len(MODALITIES)],
        "body_part": BODY_PARTS[study % len(BODY_PARTS)],
        "study_date": dt.date(2015, 1, 1) + dt.timedelta(days=int(day)),
        "patient_hash": f"{study // 3:064x}",
        "source_uri": f"synthetic://{i}.dcm",
        "content_hash": f"{i:064x}",
        "rows": 512,
        "columns": 512,
        "indexed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


def grow(collection: Collection, target: int, seed: int, centres: npt.NDArray[np.float32]) -> float:
    """Add synthetic rows and vectors in bulk (one executemany per 20,000 rows) until the store holds `target`
    synthetic images, continuing the seed's stream where the store stops (a second run adds new vectors, not
    the first run's again), then rebuild the index from the stored vectors as the product does (`auto`: exact below
    100,000 vectors, ivf-sq8 from there); returns the seconds taken."""
    start = time.perf_counter()
    images, vectors = Image.__table__, Vector.__table__
    with collection.engine.connect() as conn:
        have = int(
            conn.execute(select(func.count()).select_from(images).where(images.c.id >= SYNTHETIC_BASE)).scalar_one()
        )
    chunk = 20_000
    while have < target:
        n = min(chunk, target - have)
        vecs, days = synthetic_rows(seed, have, n, centres)
        rows = [synthetic_row(have + j, int(days[j])) for j in range(n)]
        blobs = [{"image_id": SYNTHETIC_BASE + have + j, "vector": vecs[j].tobytes()} for j in range(n)]
        with collection.engine.begin() as conn:
            conn.execute(insert(images), rows)
            conn.execute(insert(vectors), blobs)
        have += n
    index = collection.require_index()
    index.rebuild(collection.catalog)
    index.save()
    return time.perf_counter() - start


# -- server ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    data_dir: Path,
    model_dir: Path,
    log_path: Path,
    timeout: float = 180.0,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[tuple[str, int]]:
    """`medsearch serve` on a free loopback port until the block ends; always terminated by PID (its worker
    processes, with `workers` > 1, end with it)."""
    port = free_port()
    exe = Path(sys.executable).parent / "medsearch"
    env = {
        **os.environ,
        "MEDSEARCH_DATA_DIR": str(data_dir),
        "MEDSEARCH_MODEL": str(model_dir),
        "HF_HUB_OFFLINE": "1",
        **(extra_env or {}),
    }
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        command = [str(exe), "serve", "--port", str(port), *(["--workers", str(workers)] if workers > 1 else [])]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"medsearch serve exited with {proc.returncode}; see {log_path}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"medsearch serve not ready after {timeout:.0f}s; see {log_path}")
                time.sleep(0.2)
            yield base, proc.pid
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


# -- timed loops -----------------------------------------------------------------------------------


def timed_loop(
    call: Callable[[object], object],
    concurrency: int,
    seconds: float,
    max_requests: int,
    offset: int = 0,
    cpu: Callable[[], float] = time.process_time,
    payload: Callable[[int], object] = lambda i: i,
) -> tuple[Stats, list[float]]:
    """Run `call(payload(i))` from `concurrency` threads until `seconds` pass or `max_requests` were sent (the
    payload is made before the clock starts for each request)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(offset, offset + max_requests))
    cpu_start, client_start = cpu(), time.process_time()
    start = time.perf_counter()
    deadline = start + seconds

    def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            query = payload(i)
            t0 = time.perf_counter()
            try:
                call(query)
            except Exception:
                with lock:
                    errors += 1
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, used = time.perf_counter() - start, cpu() - cpu_start
    return summarise(latencies, errors, seconds, used, time.process_time() - client_start), latencies


def merge(parts: list[tuple[Stats, list[float]]]) -> Stats:
    """Combine rounds of the same loop (percentiles over all latencies)."""
    latencies = [x for _, raw in parts for x in raw]
    cpu_seconds = sum(p.cpu_ms * p.requests for p, _ in parts) / 1000.0
    client_seconds = sum(p.client_cpu_ms * p.requests for p, _ in parts) / 1000.0
    errors, seconds = sum(p.errors for p, _ in parts), sum(p.seconds for p, _ in parts)
    return summarise(latencies, errors, seconds, cpu_seconds, client_seconds)


def process_cpu(pid: int) -> Callable[[], float]:
    """Reads another process's user+system CPU seconds, with its live child processes' (`serve --workers N`: the
    workers answer, the parent only watches them) (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p: int) -> int:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0
        return int(fields[11]) + int(fields[12])

    def read() -> float:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            children = []
        return (one(pid) + sum(one(int(c)) for c in children)) / tick

    return read


class ThreadClients(PerThread[httpx.Client]):
    """One keep-alive httpx client per thread, as a real client would hold one."""

    def __init__(self, base: str) -> None:
        super().__init__(lambda: httpx.Client(base_url=base, timeout=60.0))
        self.base = base


Server = tuple[str, str, int]  # (name, base URL, PID)
CHECK_AT, WARMUP_AT, TIMED_AT = 0, 100, 1000  # disjoint request numbers: every new-pixel upload is new


def http_floor(server: Server, args: argparse.Namespace) -> Stats:
    """GET /healthz: a route that does no work at all."""
    name, base, pid = server
    clients = LeanClients(base)
    try:
        for _ in range(args.warmup):
            clients.get().get("/healthz").raise_for_status()
        floor, _ = timed_loop(
            lambda i: clients.get().get("/healthz").raise_for_status(),
            1,
            args.seconds / 4,
            args.max_requests,
            cpu=process_cpu(pid),
        )
    finally:
        clients.close()
    print(f"  HTTP floor ({name}, GET /healthz, c=1): p50 {floor.p50_ms:.2f} ms  p99 {floor.p99_ms:.2f} ms")
    return floor


def bench_size(
    size: int, collection: Collection, servers: list[Server], args: argparse.Namespace
) -> tuple[list[Scenario], dict[str, Stats]]:
    """All routes at one size: the library and every server interleaved in rounds, so drift hits all alike."""
    ids = collection.catalog.all_ids()
    results: list[Scenario] = []
    floors = {server[0]: http_floor(server, args) for server in servers}
    for route in make_routes(collection, ids, args.k):
        if args.route and route.name not in args.route:
            continue
        clients = {name: LeanClients(base) for name, base, _ in servers}  # lean: the client must not be the bottleneck

        def api_call(
            name: str, route: Route = route, clients: dict[str, LeanClients] = clients
        ) -> Callable[[object], list[int]]:
            pool = clients[name]
            return lambda q: route.api(pool.get(), q)

        try:
            scenario = Scenario(size=size, route=route.name, k=args.k, library=Stats(0, 0, 0, 0, 0, 0, 0))
            for i in range(CHECK_AT, CHECK_AT + args.check):  # the API must return what the library returns
                scenario.checked += 1
                query = route.payload(i)
                expected = route.library(query)
                for name, _, _ in servers:
                    scenario.mismatches[name] = scenario.mismatches.get(name, 0) + int(
                        api_call(name)(query) != expected
                    )
            warmup = min(args.warmup, 2) if route.name == "upload, new pixels" else args.warmup  # each is an encode
            for i in range(WARMUP_AT, WARMUP_AT + warmup):  # warm connection pools, SQLite statements
                route.library(route.payload(i))
                for name, _, _ in servers:
                    api_call(name)(route.payload(i))
            per_round = args.seconds / args.rounds
            max_round = max(1, args.max_requests // args.rounds)
            lib_parts: list[tuple[Stats, list[float]]] = []
            api_parts: dict[str, list[tuple[Stats, list[float]]]] = {}
            for r in range(args.rounds):  # the same query sequence for the library and every server in a round
                at = TIMED_AT + r * max_round
                lib_parts.append(timed_loop(route.library, 1, per_round, max_round, at, payload=route.payload))
                for c in args.concurrency:
                    order = servers if r % 2 == 0 else servers[::-1]
                    for name, _, pid in order:
                        part = timed_loop(api_call(name), c, per_round, max_round, at, process_cpu(pid), route.payload)
                        api_parts.setdefault(f"{name} c={c}", []).append(part)
            scenario.library = merge(lib_parts)
            for label, parts in api_parts.items():
                stats = merge(parts)
                scenario.api[label] = stats
                scenario.ratio_p50[label] = round(stats.p50_ms / scenario.library.p50_ms, 2)
                scenario.ratio_rps[label] = round(stats.rps / scenario.library.rps, 2) if scenario.library.rps else 0.0
            results.append(scenario)
            print_scenario(scenario)
        finally:
            for pool in clients.values():
                pool.close()
    return results, floors


def print_scenario(s: Scenario) -> None:
    """One block of the console report."""
    lib = s.library
    print(
        f"  {s.route:22s} n={s.size:>9,d}  library: p50 {lib.p50_ms:8.2f} ms  p99 {lib.p99_ms:8.2f} ms  "
        f"{lib.rps:7.1f} req/s  CPU {lib.cpu_ms:6.2f} ms/call  ({lib.requests} calls)"
    )
    for label, st in s.api.items():
        print(
            f"  {'':22s} {'':11s}  {label:12s}: p50 {st.p50_ms:8.2f} ms  p99 {st.p99_ms:8.2f} ms  "
            f"{st.rps:7.1f} req/s  CPU {st.cpu_ms:6.2f} ms/req, client {st.client_cpu_ms:5.2f}  "
            f"({st.requests} req, {st.errors} err)"
        )
    for name, bad in s.mismatches.items():
        if bad:
            print(f"  !! {name}: {bad}/{s.checked} queries returned other hits than the library")


def markdown(results: list[Scenario], floors: dict[int, dict[str, Stats]]) -> str:
    """The results as a Markdown table (one row per size, route, server and concurrency)."""
    lines = [
        "| vectors | route | client | p50 ms | p99 ms | req/s | CPU ms/req | client CPU ms/req | p50 / library | "
        "req/s / library |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results:
        lib = s.library
        lines.append(
            f"| {s.size:,} | {s.route} | library, 1 thread | {lib.p50_ms:.2f} | {lib.p99_ms:.2f} | {lib.rps:.1f} | "
            f"{lib.cpu_ms:.2f} | | 1.00 | 1.00 |"
        )
        for label, st in s.api.items():
            lines.append(
                f"| {s.size:,} | {s.route} | API {label} | {st.p50_ms:.2f} | {st.p99_ms:.2f} | {st.rps:.1f} | "
                f"{st.cpu_ms:.2f} | {st.client_cpu_ms:.2f} | {s.ratio_p50[label]:.2f} | {s.ratio_rps[label]:.2f} |"
            )
    for size, by_server in floors.items():
        for name, fl in by_server.items():
            lines.append(
                f"| {size:,} | GET /healthz (HTTP floor) | API {name} c=1 | {fl.p50_ms:.2f} | {fl.p99_ms:.2f} | "
                f"{fl.rps:.1f} | {fl.cpu_ms:.2f} | {fl.client_cpu_ms:.2f} | | |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="100000", help="Collection sizes, comma-separated (grown in place).")
    p.add_argument("--seconds", type=float, default=8.0, help="Timed seconds per loop (library, each server and c).")
    p.add_argument("--max-requests", type=int, default=6000, help="Cap on requests per loop.")
    p.add_argument("--concurrency", default="1,4", help="API client threads, comma-separated.")
    p.add_argument("--rounds", type=int, default=2, help="Alternate library/server loops this many times.")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--warmup", type=int, default=20, help="Untimed calls of each kind before timing.")
    p.add_argument("--check", type=int, default=5, help="Queries whose API hits are compared with the library's.")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME_OR_NUMBER",
        help="Only this route (repeatable; default all). A name as printed (quote it: names hold spaces and "
        "commas) or its number: " + "; ".join(f"{i} = {name}" for i, name in enumerate(ROUTE_NAMES, 1)) + ".",
    )
    p.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="Another source tree (e.g. `git worktree add /tmp/before HEAD~1`): its server runs beside this "
        "tree's, on a copy of the data migrated down to revision 0001, in the same rounds.",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="`serve --workers N` for this tree's server (the other tree's: 1)."
    )
    p.add_argument("--work-dir", type=Path, default=None, help="Where to build the model and data (temp if unset).")
    p.add_argument("--keep", action="store_true", help="Keep the work dir.")
    p.add_argument("--json", type=Path, default=None, help="Write all figures as JSON here.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.route = select_routes(args.route, p)
    return args


def select_routes(wanted: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The route names asked for by name or 1-based number, in ROUTE_NAMES order; unknown ones end the run."""
    chosen = set()
    for item in wanted:
        if item in ROUTE_NAMES:
            chosen.add(item)
        elif item.isdigit() and 1 <= int(item) <= len(ROUTE_NAMES):
            chosen.add(ROUTE_NAMES[int(item) - 1])
        else:
            parser.error(
                f"--route {item!r}: not a route; use a name or number from --help ({', '.join(map(repr, ROUTE_NAMES))})"
            )
    return [name for name in ROUTE_NAMES if name in chosen]


def copy_for_old_tree(data_dir: Path, target: Path, old_tree: Path) -> Path:
    """A copy of the data folder for a server of another tree: migrated down to the newest revision that tree
    knows (none when it knows this one: the copy then keeps its cases and float vectors as they are; a tree
    before 0003 gets 0001)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(data_dir, target, ignore=shutil.ignore_patterns("*.lock", "*-shm"))
    versions = old_tree / "retrieval" / "store" / "migrations" / "versions"
    known = {
        m.group(1) for f in versions.glob("*.py") if (m := re.search(r'^revision: str = "(\w+)"', f.read_text(), re.M))
    }
    engine = make_engine(f"sqlite:///{target / 'medsearch.db'}")
    try:
        with engine.begin() as connection:
            current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            if current not in known:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.downgrade(config, max((r for r in known if r < current), default="0001"))
    finally:
        engine.dispose()
    return target


@contextmanager
def servers_for(data_dir: Path, model_dir: Path, work: Path, args: argparse.Namespace) -> Iterator[list[Server]]:
    """This tree's server ("after") and, with --compare, the other tree's ("before") on a migrated-down copy."""
    with ExitStack() as stack:
        servers: list[Server] = []
        if args.compare:
            copy = copy_for_old_tree(data_dir, work / "data-before", args.compare)
            env = {"PYTHONPATH": str(args.compare.resolve())}
            base, pid = stack.enter_context(running_server(copy, model_dir, work / "server-before.log", extra_env=env))
            servers.append(("before", base, pid))
        env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        after = running_server(data_dir, model_dir, work / "server.log", extra_env=env, workers=args.workers)
        base, pid = stack.enter_context(after)
        servers.append(("after", base, pid))
        yield servers


def main(argv: list[str] | None = None) -> int:
    """Build the stand-in model, index the samples, grow the collection through each size, serve it, load it."""
    args = parse_args(argv)
    print(cpu_line(), flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="medsearch-apiload-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}, no GPU",
        **cpu_facts(),
        "synthetic_vectors": "stream keyed by (seed, row position): 0 exact duplicates however the sizes are grown",
        "model": MODEL_ARCH,
        "k": args.k,
        "seconds_per_loop": args.seconds,
        "rounds": args.rounds,
        "load_average_start": os.getloadavg(),
    }
    results: list[Scenario] = []
    floors: dict[int, dict[str, Stats]] = {}
    try:
        model_dir = work / "model"
        if not (model_dir / "config.json").exists():
            t0 = time.perf_counter()
            build_standin_model(model_dir, width=WIDTH, layers=1, heads=16)
            print(f"built stand-in model in {time.perf_counter() - t0:.1f}s ({MODEL_ARCH})")
        data_dir = work / "data"
        collection = Collection(Settings(data_dir=data_dir, model=str(model_dir)))
        try:
            if collection.catalog.change_marker()[0] == 0:  # the real samples first: ids 1..10
                run_index(collection, [SAMPLE.parent], IndexOptions(workers=0))
            centres = cluster_centres(args.seed, 64, WIDTH)
            meta["populate_seconds"] = {}
            meta["index"] = {}
            for size in args.sizes:
                took = grow(collection, size, args.seed, centres)
                meta["populate_seconds"][size] = round(took, 1)
                assert collection.index is not None
                meta["index"][size] = collection.index.describe()["params"]
                print(f"collection at {size:,} synthetic vectors (+{took:.1f}s), index {meta['index'][size]}")
                with servers_for(data_dir, model_dir, work, args) as servers:
                    scenarios, floors[size] = bench_size(size, collection, servers, args)
                results.extend(scenarios)
        finally:
            collection.close()
    finally:
        meta["load_average_end"] = os.getloadavg()
        meta["wall_seconds"] = round(time.perf_counter() - started, 1)
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(cpu_line())
    print(markdown(results, floors))
    print(f"\nwall {meta['wall_seconds']}s, load average {meta['load_average_start']} -> {meta['load_average_end']}")
    if args.json:
        payload = {
            "meta": meta,
            "results": [asdict(s) for s in results],
            "http_floor": {size: {n: asdict(fl) for n, fl in by.items()} for size, by in floors.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    bad = any(any(s.mismatches.values()) or any(st.errors for st in s.api.values()) for s in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
