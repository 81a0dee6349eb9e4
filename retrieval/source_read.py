"""Read the bytes behind a stored source URI: a plain file or an 'archive!/member' of a zip or tar."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from retrieval.errors import DecodeError, NotFoundError, TooLargeError
from retrieval.settings import Settings

ARCHIVE_SEPARATOR = "!/"
RECEIVED_SCHEME = "dicom:"  # C-STORE-received instances: dicom:STUDY/SERIES/SOP (no file is kept)


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a plain file with a size limit."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise DecodeError(f"{path} is a folder, not a file") from exc
    except OSError as exc:
        raise DecodeError(f"file could not be read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise TooLargeError(f"file is larger than {max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
    return data


def read_uri(uri: str, max_bytes: int) -> bytes:
    """Bytes of an indexed source (URIs come from the store, never from a client)."""
    archive, sep, member = uri.partition(ARCHIVE_SEPARATOR)
    if not sep:
        try:
            return read_file(Path(uri), max_bytes)
        except NotFoundError as exc:  # indexed from there, gone since
            raise NotFoundError(f"source file {uri} no longer exists (it was indexed from there)") from exc
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


def received_uri(study: str, series: str, sop: str) -> str:
    """The stored identity of an instance received over C-STORE."""
    return f"{RECEIVED_SCHEME}{study}/{series}/{sop}"


def read_source(uri: str, settings: Settings) -> bytes:
    """Bytes behind any stored source: a file, an archive member, a pulled WADO-RS URL, a received instance."""
    if uri.startswith(("http://", "https://")):
        from retrieval.dicomweb import read_wado_uri

        return read_wado_uri(uri, settings)
    if uri.startswith(RECEIVED_SCHEME):
        from retrieval.dicomweb import read_by_uids

        parts = uri[len(RECEIVED_SCHEME) :].split("/")
        if len(parts) != 3 or not all(parts):
            raise NotFoundError(f"malformed received-instance source {uri!r}")
        return read_by_uids(parts[0], parts[1], parts[2], settings)
    return read_uri(uri, settings.max_file_bytes)
