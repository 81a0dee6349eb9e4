"""Read the bytes behind any stored source URI: a file, an archive member, a WADO-RS URL, a received instance."""

from __future__ import annotations

from retrieval.errors import NotFoundError
from retrieval.settings import Settings
from retrieval.sources.files import read_uri

RECEIVED_SCHEME = "dicom:"  # C-STORE-received instances: dicom:STUDY/SERIES/SOP (no file is kept)


def received_uri(study: str, series: str, sop: str) -> str:
    """The stored identity of an instance received over C-STORE."""
    return f"{RECEIVED_SCHEME}{study}/{series}/{sop}"


def read_source(uri: str, settings: Settings) -> bytes:
    """Bytes behind any stored source: a file, an archive member, a pulled WADO-RS URL, a received instance."""
    if uri.startswith(("http://", "https://")):
        from retrieval.sources.dicomweb import read_wado_uri

        return read_wado_uri(uri, settings)
    if uri.startswith(RECEIVED_SCHEME):
        from retrieval.sources.dicomweb import read_by_uids

        parts = uri[len(RECEIVED_SCHEME) :].split("/")
        if len(parts) != 3 or not all(parts):
            raise NotFoundError(f"malformed received-instance source {uri!r}")
        return read_by_uids(parts[0], parts[1], parts[2], settings)
    return read_uri(uri, settings.max_file_bytes)
