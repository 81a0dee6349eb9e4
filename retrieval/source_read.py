"""Read the bytes behind a stored source URI: a plain file or an 'archive!/member' of a zip or tar."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from retrieval.errors import DecodeError, NotFoundError, TooLargeError

ARCHIVE_SEPARATOR = "!/"


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a plain file with a size limit."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"source file {path} no longer exists") from exc
    except OSError as exc:
        raise DecodeError(f"file could not be read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise TooLargeError(f"file is larger than {max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
    return data


def read_uri(uri: str, max_bytes: int) -> bytes:
    """Bytes of an indexed source (URIs come from the store, never from a client)."""
    archive, sep, member = uri.partition(ARCHIVE_SEPARATOR)
    if not sep:
        return read_file(Path(uri), max_bytes)
    try:
        if archive.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as stream:
                data = stream.read(max_bytes + 1)
        else:
            with tarfile.open(archive, "r:*") as tf:
                extracted = tf.extractfile(member)
                if extracted is None:
                    raise DecodeError("archive entry has no data")
                data = extracted.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"source archive {archive} no longer exists") from exc
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, KeyError) as exc:
        raise DecodeError(f"archive entry could not be read: {exc}") from exc
    if len(data) > max_bytes:
        raise TooLargeError(f"entry inflates beyond {max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
    return data
