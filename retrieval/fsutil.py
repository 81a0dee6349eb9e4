"""Durable file-system steps: crash-safe replacement (temp file, fsync, rename, fsync the folder), private modes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# folders and files that hold patient hashes or received DICOM bytes (with names) are the service user's alone
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as 0700; an existing folder is left as it is."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Create an empty `path` as 0600 unless it exists (then it is left as it is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
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


def publish_new(data: bytes, path: Path, fallback: Callable[[], Path] | None = None) -> Path | None:
    """Write `data` durably under a name that did not exist: a 0600 temp file (`.<name>.*.tmp`), fsynced, then
    hard-linked into place, which never replaces a file. When `path` exists, link to `fallback()` instead, or
    (without one) leave the existing file and return None; otherwise return where the data now is."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if fallback is None:
                return None
            path = fallback()
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path
