"""The source registry: who reads a planned SourceRef (by its kind) and who re-reads a stored URI (by its scheme)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retrieval.errors import InternalError, NotFoundError
from retrieval.settings import Settings
from retrieval.sources.base import SourceRef

LocalRead = Callable[[SourceRef, int], bytes]  # (planned ref, MEDSEARCH_MAX_FILE_BYTES) -> its bytes
Reread = Callable[[str, Settings], bytes]  # (stored source URI, settings) -> its bytes


@dataclass(frozen=True)
class SourceKind:
    """One kind of source as the rest of the house sees it.

    `read`: reads a planned ref's bytes in whatever process decodes it (bytes at a local path: files, archive
    members, spooled instances); None when only the source's own `fetch` can get them (a server, credentials).
    `schemes`: the URI schemes of the identities its images are stored under; `reread` reads one back later
    (renderings, window presets, calibration). A kind without a scheme has its stored URIs read by another kind's.
    `close`: releases whatever `read` keeps open in this process (an archive between its members).
    """

    name: str
    read: LocalRead | None = None
    schemes: tuple[str, ...] = ()
    reread: Reread | None = None
    close: Callable[[], None] | None = None


KINDS: dict[str, SourceKind] = {}
READERS: dict[str, Reread] = {}  # re-readers by URI scheme (lower case, no colon)
_PATHS: list[Reread] = []  # the re-reader of URIs without a scheme: plain paths and 'archive!/member'


def register(kind: SourceKind, paths: bool = False) -> SourceKind:
    """Make a source kind known (at its module's import); `paths`: it also re-reads URIs that have no scheme."""
    KINDS[kind.name] = kind
    if kind.reread is not None:
        READERS.update(dict.fromkeys((s.lower().rstrip(":") for s in kind.schemes), kind.reread))
        if paths:
            _PATHS[:] = [kind.reread]
    return kind


def kind_of(ref: SourceRef) -> SourceKind:
    """The registered kind of a planned ref."""
    kind = KINDS.get(ref.kind)
    if kind is None:
        raise InternalError(f"no source kind {ref.kind!r} is registered (retrieval.sources.registry.register)")
    return kind


def worker_readable(ref: SourceRef) -> bool:
    """True when whichever process decodes the ref can read its bytes itself (nothing ships them through the
    driver)."""
    return kind_of(ref).read is not None


def read_ref(ref: SourceRef, max_bytes: int) -> bytes:
    """The bytes of a planned, worker-readable ref, refusing more than `max_bytes`."""
    read = kind_of(ref).read
    if read is None:
        raise InternalError(f"{ref.kind} sources are read by their source's fetch, not by a worker")
    return read(ref, max_bytes)


def release() -> None:
    """Close whatever the kinds' readers keep open in this process."""
    for kind in KINDS.values():
        if kind.close is not None:
            kind.close()


def read_source(uri: str, settings: Settings) -> bytes:
    """Bytes behind any stored source URI, by its scheme ("C:\\..." is a path, not a scheme)."""
    scheme, colon, _ = uri.partition(":")
    reader = READERS.get(scheme.lower()) if colon and len(scheme) > 1 else None
    if reader is None:
        if not _PATHS:
            raise NotFoundError(f"no source reads {uri!r}")
        reader = _PATHS[0]
    return reader(uri, settings)
