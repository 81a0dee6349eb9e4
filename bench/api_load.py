"""API load benchmark: p50/p99 latency and requests/s of the REST API vs the bare library call, loopback."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub; the model is built from config
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import httpx
import numpy as np
import numpy.typing as npt

from retrieval import query as engine
from retrieval.collection import Collection
from retrieval.encoders.standin import build_standin_model
from retrieval.settings import Settings
from retrieval.store.models import Image

WIDTH = 1152  # MedSigLIP-448's embedding width, so FAISS and SQLite blob costs are those of the real model
MODEL_ARCH = "random SigLIP stand-in: vision width 1152, 1 layer, 16 heads; text tower width 32, 1 layer"
MODALITIES = ("CR", "CT", "MR", "US", "MG", "DX")
BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "KNEE", "BREAST", "SPINE")
TEXTS = (
    "chest x-ray showing right lower lobe consolidation",
    "normal chest radiograph",
    "ct of the abdomen with contrast",
    "mri brain t2 flair hyperintensity",
    "pleural effusion on the left side",
    "fracture of the distal radius",
    "ultrasound of the liver",
    "mammogram with calcifications",
    "pneumothorax",
    "cardiomegaly",
    "pulmonary nodule",
    "left lower lobe atelectasis with small effusion",
)


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


@dataclass
class Scenario:
    """One route at one collection size: the library baseline and the API at each concurrency."""

    size: int
    route: str
    k: int
    library: Stats
    api: dict[int, Stats] = field(default_factory=dict)
    ratio_p50: dict[int, float] = field(default_factory=dict)  # API p50 / library p50
    ratio_rps: dict[int, float] = field(default_factory=dict)  # API req/s / library req/s (1 thread)
    mismatches: int = 0  # API hit ids differing from the library's for the same query (should be 0)
    checked: int = 0


def summarise(latencies: list[float], errors: int, seconds: float, cpu_seconds: float = 0.0) -> Stats:
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
    )


# -- collection ------------------------------------------------------------------------------------


def clustered_vectors(rng: np.random.Generator, n: int, centres: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Unit vectors scattered around random cluster centres (a little like real embeddings)."""
    which = rng.integers(0, len(centres), size=n)
    vecs = centres[which] + 0.6 * rng.standard_normal((n, centres.shape[1]), dtype=np.float32) / np.sqrt(WIDTH)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32)


def synthetic_image(i: int, rng: np.random.Generator) -> Image:
    """An Image row that never existed on disk (no thumbnail is ever asked for)."""
    study, series = i // 8, i // 2
    return Image(
        instance_key=f"synthetic://{i}#1",
        kind="dicom",
        sop_instance_uid=f"1.2.826.0.1.3680043.10.999.3.{i}",
        study_instance_uid=f"1.2.826.0.1.3680043.10.999.1.{study}",
        series_instance_uid=f"1.2.826.0.1.3680043.10.999.2.{series}",
        frame=1,
        number_of_frames=1,
        modality=MODALITIES[study % len(MODALITIES)],
        body_part=BODY_PARTS[study % len(BODY_PARTS)],
        study_date=dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650))),
        patient_hash=f"{study // 3:064x}",
        source_uri=f"synthetic://{i}.dcm",
        content_hash=f"{i:064x}",
        rows=512,
        columns=512,
    )


def grow(collection: Collection, target: int, rng: np.random.Generator, centres: npt.NDArray[np.float32]) -> float:
    """Add synthetic rows and vectors until the collection holds `target`; returns the seconds taken."""
    start = time.perf_counter()
    index = collection.require_index()
    have = index.ntotal
    batch = 2000
    while have < target:
        n = min(batch, target - have)
        vecs = clustered_vectors(rng, n, centres)
        rows = [(synthetic_image(have + j, rng), vecs[j]) for j in range(n)]
        ids = collection.catalog.write_batch(rows)
        index.add(np.asarray(ids, dtype=np.int64), vecs)
        have += n
    collection.save_index()
    return time.perf_counter() - start


# -- server ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    data_dir: Path, model_dir: Path, log_path: Path, timeout: float = 180.0, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """`medsearch serve` on a free loopback port until the block ends; always terminated by PID."""
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
        proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
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
    call: Callable[[int], object],
    concurrency: int,
    seconds: float,
    max_requests: int,
    offset: int = 0,
    cpu: Callable[[], float] = time.process_time,
) -> tuple[Stats, list[float]]:
    """Run `call(i)` from `concurrency` threads until `seconds` pass or `max_requests` were sent."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(offset, offset + max_requests))
    cpu_start = cpu()
    start = time.perf_counter()
    deadline = start + seconds

    def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
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
    return summarise(latencies, errors, time.perf_counter() - start, cpu() - cpu_start), latencies


def merge(parts: list[tuple[Stats, list[float]]]) -> Stats:
    """Combine rounds of the same loop (percentiles over all latencies)."""
    latencies = [x for _, raw in parts for x in raw]
    cpu_seconds = sum(p.cpu_ms * p.requests for p, _ in parts) / 1000.0
    return summarise(latencies, sum(p.errors for p, _ in parts), sum(p.seconds for p, _ in parts), cpu_seconds)


def process_cpu(pid: int) -> Callable[[], float]:
    """Reads another process's user+system CPU seconds (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return read


@dataclass
class Route:
    """How to issue one kind of query through the library and through the API."""

    name: str
    library: Callable[[int], list[int]]
    api: Callable[[httpx.Client, int], list[int]]


def make_routes(collection: Collection, ids: npt.NDArray[np.int64], k: int) -> list[Route]:
    """search-by-id and text search, each with its bare library call and its HTTP request."""

    def pick(i: int) -> int:
        return int(ids[(i * 7919) % len(ids)])

    def lib_id(i: int) -> list[int]:
        hits = engine.search(collection, engine.embed_id(collection, pick(i)), k=k)
        return [h.image.id for h in hits]

    def api_id(client: httpx.Client, i: int) -> list[int]:
        resp = client.get(f"/v1/images/{pick(i)}/similar", params={"k": k})
        resp.raise_for_status()
        return [h["id"] for h in resp.json()["hits"]]

    def lib_text(i: int) -> list[int]:
        hits = engine.search(collection, engine.embed_text(collection, TEXTS[i % len(TEXTS)]), k=k)
        return [h.image.id for h in hits]

    def api_text(client: httpx.Client, i: int) -> list[int]:
        resp = client.post("/v1/search/text", json={"text": TEXTS[i % len(TEXTS)], "k": k})
        resp.raise_for_status()
        return [h["id"] for h in resp.json()["hits"]]

    return [Route("search-by-id", lib_id, api_id), Route("text", lib_text, api_text)]


class ThreadClients:
    """One keep-alive httpx client per thread, as a real client would hold one."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._local = threading.local()
        self._all: list[httpx.Client] = []
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        """This thread's client."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base, timeout=60.0)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        """Close every client made."""
        for client in self._all:
            client.close()


def bench_size(
    size: int,
    collection: Collection,
    base: str,
    server_pid: int,
    args: argparse.Namespace,
) -> tuple[list[Scenario], Stats]:
    """All routes at one size: library and API loops interleaved in rounds, so drift hits both alike."""
    ids = collection.catalog.all_ids()
    results: list[Scenario] = []
    server_cpu = process_cpu(server_pid)
    floor_clients = ThreadClients(base)
    try:  # the HTTP floor: a route that does no work at all
        for _ in range(args.warmup):
            floor_clients.get().get("/healthz").raise_for_status()
        floor, _ = timed_loop(
            lambda i: floor_clients.get().get("/healthz").raise_for_status(),
            1,
            args.seconds / 4,
            args.max_requests,
            cpu=server_cpu,
        )
    finally:
        floor_clients.close()
    print(
        f"  HTTP floor (GET /healthz, c=1): p50 {floor.p50_ms:.2f} ms  p99 {floor.p99_ms:.2f} ms  "
        f"{floor.rps:.1f} req/s  server CPU {floor.cpu_ms:.2f} ms/req"
    )
    for route in make_routes(collection, ids, args.k):
        clients = ThreadClients(base)

        def api_call(i: int, route: Route = route, clients: ThreadClients = clients) -> list[int]:
            return route.api(clients.get(), i)

        try:
            # correctness: the API must return what the library returns for the same query
            checked = mismatches = 0
            for i in range(args.check):
                checked += 1
                mismatches += int(route.library(i) != api_call(i))
            for i in range(args.warmup):  # warm caches, connection pools, SQLite statements
                route.library(i)
                api_call(i)
            per_round = args.seconds / args.rounds
            max_round = max(1, args.max_requests // args.rounds)
            lib_parts: list[tuple[Stats, list[float]]] = []
            api_parts: dict[int, list[tuple[Stats, list[float]]]] = {c: [] for c in args.concurrency}
            for r in range(args.rounds):  # same query sequence for the library and the API in each round
                lib_parts.append(timed_loop(route.library, 1, per_round, max_round, r * max_round))
                for c in args.concurrency:
                    api_parts[c].append(timed_loop(api_call, c, per_round, max_round, r * max_round, server_cpu))
            scenario = Scenario(
                size=size,
                route=route.name,
                k=args.k,
                library=merge(lib_parts),
                mismatches=mismatches,
                checked=checked,
            )
            for c in args.concurrency:
                stats = merge(api_parts[c])
                scenario.api[c] = stats
                scenario.ratio_p50[c] = round(stats.p50_ms / scenario.library.p50_ms, 2)
                scenario.ratio_rps[c] = round(stats.rps / scenario.library.rps, 2)
            results.append(scenario)
            print_scenario(scenario)
        finally:
            clients.close()
    return results, floor


def print_scenario(s: Scenario) -> None:
    """One block of the console report."""
    lib = s.library
    print(
        f"  {s.route:13s} n={s.size:>7,d}  library: p50 {lib.p50_ms:8.2f} ms  p99 {lib.p99_ms:8.2f} ms  "
        f"{lib.rps:7.1f} req/s  CPU {lib.cpu_ms:6.2f} ms/call  ({lib.requests} calls)"
    )
    for c, st in s.api.items():
        print(
            f"  {'':13s} {'':9s}  API c={c}: p50 {st.p50_ms:8.2f} ms  p99 {st.p99_ms:8.2f} ms  "
            f"{st.rps:7.1f} req/s  CPU {st.cpu_ms:6.2f} ms/req  ({st.requests} req, {st.errors} err)  "
            f"p50 ratio {s.ratio_p50[c]:.2f}"
        )
    if s.mismatches:
        print(f"  !! {s.mismatches}/{s.checked} queries returned different hits through the API")


def markdown(results: list[Scenario], floors: dict[int, Stats]) -> str:
    """The results as a Markdown table (one row per size, route and concurrency)."""
    lines = [
        "| vectors | route | client | concurrency | p50 ms | p99 ms | req/s | CPU ms/req | API/library p50 "
        "| API/library req/s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results:
        lib = s.library
        lines.append(
            f"| {s.size:,} | {s.route} | library | 1 | {lib.p50_ms:.2f} | {lib.p99_ms:.2f} | {lib.rps:.1f} | "
            f"{lib.cpu_ms:.2f} | 1.00 | 1.00 |"
        )
        for c, st in s.api.items():
            lines.append(
                f"| {s.size:,} | {s.route} | API | {c} | {st.p50_ms:.2f} | {st.p99_ms:.2f} | {st.rps:.1f} | "
                f"{st.cpu_ms:.2f} | {s.ratio_p50[c]:.2f} | {s.ratio_rps[c]:.2f} |"
            )
    for size, fl in floors.items():
        lines.append(
            f"| {size:,} | GET /healthz (HTTP floor) | API | 1 | {fl.p50_ms:.2f} | {fl.p99_ms:.2f} | {fl.rps:.1f} | "
            f"{fl.cpu_ms:.2f} | | |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="10000,100000", help="Collection sizes, comma-separated (grown in place).")
    p.add_argument("--seconds", type=float, default=12.0, help="Timed seconds per loop (library, each concurrency).")
    p.add_argument("--max-requests", type=int, default=10000, help="Cap on requests per loop.")
    p.add_argument("--concurrency", default="1,4", help="API client threads, comma-separated.")
    p.add_argument("--rounds", type=int, default=2, help="Alternate library/API loops this many times.")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--warmup", type=int, default=20, help="Untimed calls of each kind before timing.")
    p.add_argument("--check", type=int, default=10, help="Queries whose API hits are compared with the library's.")
    p.add_argument("--work-dir", type=Path, default=None, help="Where to build the model and data (temp if unset).")
    p.add_argument("--keep", action="store_true", help="Keep the work dir.")
    p.add_argument("--json", type=Path, default=None, help="Write all figures as JSON here.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the stand-in model, grow the collection through each size, serve it, load it, report."""
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="medsearch-apiload-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}, no GPU",
        "model": MODEL_ARCH,
        "k": args.k,
        "seconds_per_loop": args.seconds,
        "rounds": args.rounds,
        "load_average_start": os.getloadavg(),
    }
    results: list[Scenario] = []
    floors: dict[int, Stats] = {}
    try:
        model_dir = work / "model"
        if not (model_dir / "config.json").exists():
            t0 = time.perf_counter()
            build_standin_model(model_dir, width=WIDTH, layers=1, heads=16)
            print(f"built stand-in model in {time.perf_counter() - t0:.1f}s ({MODEL_ARCH})")
        data_dir = work / "data"
        collection = Collection(Settings(data_dir=data_dir, model=str(model_dir)))
        try:
            _ = collection.encoder  # records the fingerprint and opens the index (width 1152)
            rng = np.random.default_rng(args.seed)
            centres = rng.standard_normal((64, WIDTH), dtype=np.float32)
            centres /= np.linalg.norm(centres, axis=1, keepdims=True)
            meta["populate_seconds"] = {}
            for size in args.sizes:
                took = grow(collection, size, rng, centres)
                meta["populate_seconds"][size] = round(took, 1)
                print(f"collection at {size:,} vectors (+{took:.1f}s to write rows, vectors and index)")
                with running_server(data_dir, model_dir, work / "server.log") as (base, pid):
                    scenarios, floor = bench_size(size, collection, base, pid, args)
                results.extend(scenarios)
                floors[size] = floor
        finally:
            collection.close()
    finally:
        meta["load_average_end"] = os.getloadavg()
        meta["wall_seconds"] = round(time.perf_counter() - started, 1)
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(results, floors))
    print(f"\nwall {meta['wall_seconds']}s, load average {meta['load_average_start']} -> {meta['load_average_end']}")
    if args.json:
        payload = {
            "meta": meta,
            "results": [asdict(s) for s in results],
            "http_floor": {size: asdict(fl) for size, fl in floors.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if any(s.mismatches or any(st.errors for st in s.api.values()) for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
