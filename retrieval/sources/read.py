"""Read the bytes behind any stored source URI: one reader per URI scheme (files and archive members otherwise)."""

from __future__ import annotations

from collections.abc import Callable

from retrieval.settings import Settings
from retrieval.sources.files import read_uri
from retrieval.sources.received import SCHEME as RECEIVED_SCHEME
from retrieval.sources.received import read_received, received_uri

__all__ = ["READERS", "RECEIVED_SCHEME", "read_source", "received_uri"]
Reader = Callable[[str, Settings], bytes]


def _wado(uri: str, settings: Settings) -> bytes:
    from retrieval.sources.dicomweb import read_wado_uri  # the DICOMweb client only when a source needs it

    return read_wado_uri(uri, settings)


def _file(uri: str, settings: Settings) -> bytes:
    return read_uri(uri, settings.max_file_bytes)


READERS: dict[str, Reader] = {"http": _wado, "https": _wado, RECEIVED_SCHEME.rstrip(":"): read_received}


def read_source(uri: str, settings: Settings) -> bytes:
    """Bytes behind any stored source: a file, an archive member, a pulled WADO-RS URL, a received instance."""
    scheme, colon, _ = uri.partition(":")
    reader = READERS.get(scheme.lower(), _file) if colon and len(scheme) > 1 else _file  # "C:\\..." is a path
    return reader(uri, settings)
