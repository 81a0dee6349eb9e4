"""Worker processes that die with their parent: a parent-death signal (Linux) or a watchdog thread elsewhere."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_SECONDS = 1.0
ORPHANED_EXIT = 75  # the status of a worker that found its parent gone (never seen by anyone but the reaper)


def die_with_parent() -> None:
    """Call first thing in a worker process (a pool initializer): when the parent dies, even by SIGKILL, so do we.

    Linux: the kernel sends SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG). The parent may have died before
    that call took effect, so the parent pid is checked once afterwards. Without prctl a daemon thread polls it.
    """
    parent = multiprocessing.parent_process()
    expected = parent.pid if parent is not None and parent.pid is not None else os.getppid()
    if not _set_pdeathsig():
        threading.Thread(target=_watch, args=(expected,), name="die-with-parent", daemon=True).start()
    if os.getppid() != expected:  # orphaned before the signal was armed: reparented to init or a subreaper
        os._exit(ORPHANED_EXIT)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked with
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(expected: int) -> None:
    while os.getppid() == expected:
        time.sleep(WATCHDOG_SECONDS)
    os._exit(ORPHANED_EXIT)
