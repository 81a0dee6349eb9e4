"""Start a local Ray instance, once more when its start-up times out on a busy machine."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from retrieval.errors import ClusterError
from retrieval.optional import require

log = logging.getLogger(__name__)
START_ATTEMPTS = 2
# Ray waits a fixed 30 s for its raylet to register with the GCS and then raises a bare Exception with this text
# (ray/_private/node.py); on 2 busy cores that wait can run out although nothing is wrong.
STARTUP_TIMEOUT = "timed out during startup"


def start_local(num_cpus: int, **options: Any) -> None:
    """`ray.init` of a local instance with `num_cpus` slots and no dashboard; a start-up that timed out is tried
    again after the processes it left are stopped; any other failure, or a second time-out, is a ClusterError."""
    ray = require("ray", "indexing on a Ray cluster", "ray")
    for attempt in range(1, START_ATTEMPTS + 1):
        before = _ray_children()
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
            return
        except Exception as exc:  # Ray raises a bare Exception for a start-up time-out
            ray.shutdown()
            stopped = _stop(_ray_children() - before)
            if STARTUP_TIMEOUT not in str(exc) or attempt == START_ATTEMPTS:
                raise ClusterError(f"could not start a local Ray instance: {exc}") from exc
            log.warning(
                "a local Ray instance did not start within Ray's 30 s (attempt %d of %d, %d leftover processes "
                "stopped); starting it again",
                attempt,
                START_ATTEMPTS,
                stopped,
            )


def _ray_children() -> set[int]:
    """PIDs of this process's descendants that run Ray's own programs (GCS, raylet, agents, reaper), from /proc."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    descendants: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    return {pid for pid in descendants if "/ray/" in commands.get(pid, "") or "ray." in commands.get(pid, "")}


def _stop(pids: set[int]) -> int:
    """Kill the given processes (a failed `ray.init` leaves its GCS and raylet running); how many were alive."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            continue
    alive, deadline = list(killed), time.monotonic() + 10
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.05)
    return len(killed)


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie (its parent collects a zombie's status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
