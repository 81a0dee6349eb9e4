"""Crash-safe file replacement: write a temp file in the same folder, fsync it, rename it over, fsync the folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from retrieval.fsutil import fsync_dir


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(temp_path)` then atomically move the result to `path` (readers see old or new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace a small text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
