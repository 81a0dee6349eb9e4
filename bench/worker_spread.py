"""How four clients' connections spread over `serve --workers 2`, and the req/s they get, trial by trial.

Each trial opens four keep-alive connections at the same moment (one thread each, `http.client`, a search by id
per request) and runs them for `--seconds`. The kernel's split is read right after connecting (which worker
accepted each connection, from /proc), the split at the end likewise; `moved` counts the answers that asked a
connection to reconnect (`Connection: close`, api/worker_balance.py). One client alone on one connection runs first,
for the ratio. With `--before DIR` (the code before, e.g. `git archive REV | tar -x -C DIR`) a second server runs
that code on the same collection and the trials alternate between the two, side by side in one run.

    python bench/worker_spread.py DATA_DIR MODEL_DIR [--trials 8] [--seconds 3] [--before DIR]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from machine import cpu_line  # type: ignore[import-not-found]  # noqa: E402

from tests.service import is_ready, running_server, service_env, worker_holding, worker_pids  # noqa: E402


@dataclass
class Trial:
    """One run of `clients` connections: req/s, connections per worker at the start and at the end, moves."""

    req_s: float
    first: list[int]
    last: list[int]
    moved: int

    def row(self, one: float) -> str:
        first, last = "/".join(map(str, self.first)), "/".join(map(str, self.last))
        return f"{first} | {last} | {self.moved} | {self.req_s:.1f} | {self.req_s / one:.2f}x"


def run(port: int, seconds: float, clients: int, pivots: list[int], workers: list[int]) -> Trial:
    """`clients` connections opened at once, each asking for `seconds`: req/s, the splits and the moves."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]
    start, connected, go = threading.Barrier(clients), threading.Barrier(clients + 1), threading.Barrier(clients + 1)
    done = [0] * clients
    moved = [0] * clients

    def client(n: int) -> None:
        connection = connections[n]
        start.wait()
        connection.connect()
        connected.wait()
        go.wait()
        until = time.monotonic() + seconds
        while time.monotonic() < until or connection.sock is None:  # end on a connection that stays open
            connection.request("GET", f"/v1/images/{pivots[(n + done[n] * clients) % len(pivots)]}/similar?k=10")
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            done[n] += 1
            moved[n] += response.getheader("connection") == "close"

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    connected.wait()
    first = holders(connections, port, workers)  # the kernel's split: each worker accepts without a request
    go.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    last = holders(connections, port, workers)
    for connection in connections:
        connection.close()
    return Trial(sum(done) / elapsed, split(first, workers), split(last, workers), sum(moved))


def holders(connections: list[http.client.HTTPConnection], port: int, workers: list[int]) -> list[int | None]:
    """The worker holding each connection, waiting up to a second for the workers to accept them."""
    deadline = time.monotonic() + 1.0
    while True:
        found = [worker_holding(c.sock.getsockname()[1], port, workers) if c.sock else None for c in connections]
        if None not in found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def split(held: list[int | None], workers: list[int]) -> list[int]:
    """Connections per worker, the busiest first."""
    return sorted((held.count(w) for w in workers), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--trials", type=int, default=8, help="four-client trials per server")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--before", type=Path, help="a checkout of the code before, run side by side")
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    env = service_env(args.data_dir, args.model_dir, MEDSEARCH_INDEX_MMAP="1")
    codes = {"after": env} | ({"before": {**env, "PYTHONPATH": str(args.before)}} if args.before else {})
    pivots = list(range(1001, 1201))
    with tempfile.TemporaryDirectory(prefix="medsearch-spread-") as logs, ExitStack() as stack:
        servers = {
            name: stack.enter_context(running_server(code, Path(logs, name), is_ready, args=("--workers", "2")))
            for name, code in codes.items()
        }
        workers: dict[str, list[int]] = {}
        for name, server in servers.items():
            while len(found := worker_pids(server.proc.pid)) < 2:
                time.sleep(0.2)
            workers[name] = found
            run(server.port, 2.0, 4, pivots, found)  # both workers warmed up
        one = {name: run(server.port, args.seconds, 1, pivots, workers[name]).req_s for name, server in servers.items()}
        print("\n" + "; ".join(f"one client, {name}: {value:.1f} req/s" for name, value in one.items()))
        print(
            "| trial | code | kernel's split | split at the end | answers moving a connection | req/s | x one client |"
        )
        print("|---:|---|---|---|---:|---:|---:|")
        trials: dict[str, list[Trial]] = {name: [] for name in servers}
        for n in range(args.trials):
            for name in list(servers)[n % len(servers) :] + list(servers)[: n % len(servers)]:
                time.sleep(1.5)  # the last trial's connections stop counting as busy
                trial = run(servers[name].port, args.seconds, 4, pivots, workers[name])
                trials[name].append(trial)
                print(f"| {n + 1} | {name} | {trial.row(one[name])} |", flush=True)
    print()
    for name, done in trials.items():  # compare within one server: the two servers' speeds differ by their place
        for first in sorted({"/".join(map(str, t.first)) for t in done}):
            chosen = [t.req_s for t in done if "/".join(map(str, t.first)) == first]
            median = statistics.median(chosen)
            ratio = median / one[name]
            print(f"{name}, kernel split {first}: {len(chosen)} trials, median {median:.1f} req/s = {ratio:.2f}x")
    print(cpu_line())


if __name__ == "__main__":
    main()
