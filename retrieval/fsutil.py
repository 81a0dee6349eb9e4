"""Durable file-system steps: crash-safe file replacement (temp file, fsync, rename, fsync the folder), dir fsync."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[str], object], prefix: str = ".partial-") -> None:
    """Call `write(temp_path)` then atomically move the result to `path` (readers see old or new, never half).
    The temp file is `<prefix>*.tmp` in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
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


def atomic_write_text(path: Path, text: str, prefix: str = ".partial-") -> None:
    """Atomically replace a small text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), prefix)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace a file with `data`."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
