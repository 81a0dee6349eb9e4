"""Resident memory of `medsearch serve` on one collection (issue 22): RSS and PSS of the server after warm-up and
after N more queries, with a lossy index's float vectors read into memory (the default), memory-mapped
(MEDSEARCH_INDEX_MMAP=1) and, with --compare, served by another tree (e.g. main before the float vectors existed,
which re-scored from the database's vector blobs) on a migrated-down copy of the data.

Each configuration starts its own server, one after the other, on the same data folder; the queries are a fixed
mix of search by id, text search (new text each time) and study-date filtered search by id (windows of ~1 % and
~0.1 % of the synthetic collection's ten years). Memory is read from /proc/PID/smaps_rollup (RSS, PSS and their
anonymous / file-backed parts) and /proc/PID/status (VmHWM: the peak RSS, reached while the index loads).

    flock /tmp/bigmem.lock python bench/serve_memory.py /tmp/i22-1m/data /tmp/i22-1m/model --queries 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from api_load import copy_for_old_tree, running_server
from machine import cpu_line

SMAPS_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Anonymous")
FIRST_DAY, DAYS = dt.date(2015, 1, 1), 3650  # bench/synthetic.py's study dates
WARMUP = 20


def memory(pid: int) -> dict[str, float]:
    """MB of the process's RSS, PSS (split anonymous / file-backed) and peak RSS."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in SMAPS_FIELDS:
            out[name] = round(int(rest.split()[0]) / 1024, 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["peak_rss"] = round(int(line.split()[1]) / 1024, 1)
    return out


def query(client: httpx.Client, i: int, ids: list[int], rng: np.random.Generator) -> None:
    """One request of the mix (raises on an error status: a memory figure of a failing server means nothing)."""
    kind = i % 4
    pivot = ids[int(rng.integers(0, len(ids)))]
    if kind == 0:
        resp = client.get(f"/v1/images/{pivot}/similar", params={"k": 10})
    elif kind == 1:
        resp = client.post("/v1/search/text", json={"text": f"finding number {i} in the chest", "k": 10})
    else:
        days = 37 if kind == 2 else 4  # ~1 % and ~0.1 % of ten years
        start = FIRST_DAY + dt.timedelta(days=int(rng.integers(0, DAYS - days)))
        window = {"date_from": start.isoformat(), "date_to": (start + dt.timedelta(days=days - 1)).isoformat()}
        resp = client.get(f"/v1/images/{pivot}/similar", params={"k": 10, **window})
    resp.raise_for_status()


def measure(
    name: str, data_dir: Path, model_dir: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Start a server, read its memory when ready, after the warm-up and after the timed queries."""
    rng = np.random.default_rng(0)
    ids = list(range(1000, 1000 + args.pivots))  # synthetic ids (bench/api_load.py): the same for every server
    started = time.perf_counter()
    with running_server(data_dir, model_dir, args.work / f"server-{name}.log", timeout=900, extra_env=env) as (
        base,
        pid,
    ):
        row: dict[str, Any] = {"server": name, "env": env, "ready_seconds": round(time.perf_counter() - started, 1)}
        row["ready"] = memory(pid)
        with httpx.Client(base_url=base, timeout=300.0) as client:
            for i in range(WARMUP):
                query(client, i, ids, rng)
            row["after warm-up"] = memory(pid)
            t0 = time.perf_counter()
            for i in range(WARMUP, WARMUP + args.queries):
                query(client, i, ids, rng)
            row["query_seconds"] = round(time.perf_counter() - t0, 1)
            row[f"after {args.queries} queries"] = memory(pid)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--pivots", type=int, default=1_000_000, help="search by id among synthetic ids 1000..")
    parser.add_argument("--compare", type=Path, help="another source tree, served on a migrated-down copy")
    parser.add_argument("--only", action="append", default=[], help="in-memory, mmap or compare (repeatable)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/serve-memory"), help="server logs, the copy")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(cpu_line(), flush=True)
    here = str(Path(__file__).resolve().parent.parent)
    runs: list[tuple[str, Path, dict[str, str]]] = [
        ("in-memory", args.data_dir, {"PYTHONPATH": here, "MEDSEARCH_INDEX_MMAP": "0"}),
        ("mmap", args.data_dir, {"PYTHONPATH": here, "MEDSEARCH_INDEX_MMAP": "1"}),
    ]
    copy = None
    if args.compare and (not args.only or "compare" in args.only):
        copy = copy_for_old_tree(args.data_dir, args.work / "data-compare", args.compare)
        (copy / "index.faiss.vectors.npy").unlink(missing_ok=True)  # not the old tree's: it never reads it
        runs.append(("compare", copy, {"PYTHONPATH": str(args.compare.resolve()), "MEDSEARCH_INDEX_MMAP": "0"}))
    rows = [
        measure(name, data, args.model_dir, env, args) for name, data, env in runs if not args.only or name in args.only
    ]
    if copy is not None:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"\n{cpu_line()}; load average {os.getloadavg()}")
    print("\n| server | when | RSS MB | PSS MB | PSS anon MB | PSS file MB | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        for when in ("ready", "after warm-up", f"after {args.queries} queries"):
            m = row[when]
            print(
                f"| {row['server']} | {when} | {m['Rss']:.0f} | {m['Pss']:.0f} | {m.get('Pss_Anon', 0):.0f} "
                f"| {m.get('Pss_File', 0):.0f} | {m['peak_rss']:.0f} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_line(), "load": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
