"""File-system steps shared by the store, the index writer and the C-STORE spool: durable renames, private modes."""

from __future__ import annotations

import os
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
