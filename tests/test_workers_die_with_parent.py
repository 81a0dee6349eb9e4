"""Decode worker processes die with their parent: SIGKILL `medsearch listen` or `medsearch index` (the main process
alone, as the OOM killer or `kill -9 PID` would) and count what is left of its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import testdata_file
from tests.orthanc import encode, free_port, with_new_uids
from tests.test_pacs_listen import Listener, _env, _indexed_uids, _wait_for
from tests.test_resume import build_corpus, group_alive, index_command, medsearch_env

pytestmark = [pytest.mark.peers, pytest.mark.slow]  # real listen/index processes SIGKILLed (not in `make test-fast`)

WORKERS = 2
# The kernel's parent-death signal is immediate; a worker still importing when its parent died (a spawned worker
# imports for seconds on a loaded machine) notices at its initializer. This only bounds that on a slow machine.
GONE_WITHIN = 90.0


def _kill_leader_and_count(proc: subprocess.Popen[bytes], data_dir: Path) -> list[tuple[int, str]]:
    """Once images are committed (so the decode workers are up and working), SIGKILL the main process only;
    returns the survivors of its process group, with their command lines."""
    pgid = proc.pid
    try:
        _wait_for(lambda: _indexed_uids(data_dir) or proc.poll() is not None, 240, "the first committed images")
        assert len(group_alive(pgid)) >= 1 + WORKERS, "no decode worker processes to leave behind"
        assert proc.poll() is None, "the run ended before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + GONE_WITHIN
        while (left := group_alive(pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]) for pid in left]
    finally:  # never leave our own orphans behind, whatever the outcome
        for pid in group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigkilled_listener_leaves_no_decode_worker(tmp_path: Path, tiny_model: Path) -> None:
    data_dir = tmp_path / "data"
    spool = data_dir / "spool"  # received before the kill: the listener is busy indexing them
    spool.mkdir(parents=True)
    for i in range(300):
        (spool / f"{i:04d}.dcm").write_bytes(encode(with_new_uids(testdata_file("CT_small.dcm"))))
    env = _env(data_dir, tiny_model, MEDSEARCH_WORKERS=str(WORKERS), MEDSEARCH_SPOOL_BATCH="300")  # one pool
    listener = Listener(env, free_port(), tmp_path / "listen.log", session=True)
    try:
        left = _kill_leader_and_count(listener.process, data_dir)
    finally:
        listener.stop()
    assert left == [], f"`medsearch listen` was SIGKILLed; its processes {left} kept running"


def test_sigkilled_indexer_leaves_no_decode_worker(tmp_path: Path, tiny_model: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus")
    command = index_command(corpus, tmp_path / "data", workers=WORKERS)
    with open(tmp_path / "index.log", "ab") as log:
        proc = subprocess.Popen(
            command, env=medsearch_env(tiny_model), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    left = _kill_leader_and_count(proc, tmp_path / "data")
    assert left == [], f"`medsearch index` was SIGKILLed; its processes {left} kept running"
