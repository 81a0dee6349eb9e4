"""The source registry: who reads a planned SourceRef (by its kind) and who re-reads a stored URI (by its scheme)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

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
    `forget`: drops what the kind keeps of images that were removed (given their URIs); returns how many.
    `path`: the local file holding exactly a ref's bytes, if there is one (planning reads only its header).
    """

    name: str
    read: LocalRead | None = None
    schemes: tuple[str, ...] = ()
    reread: Reread | None = None
    close: Callable[[], None] | None = None
    forget: Callable[[Iterable[str], Settings], int] | None = None
    path: Callable[[SourceRef], str | None] | None = None


KINDS: dict[str, SourceKind] = {}
_MODULES: dict[str, str] = {}  # kind -> the module that registered it (its import registers it again elsewhere)
READERS: dict[str, Reread] = {}  # re-readers by URI scheme (lower case, no colon)
_PATHS: list[Reread] = []  # the re-reader of URIs without a scheme: plain paths and 'archive!/member'


def register(kind: SourceKind, paths: bool = False) -> SourceKind:
    """Make a source kind known (at its module's import); `paths`: it also re-reads URIs that have no scheme."""
    KINDS[kind.name] = kind
    _MODULES[kind.name] = sys._getframe(1).f_globals.get("__name__", "")  # the caller, not where `read` lives
    if kind.reread is not None:
        READERS.update(dict.fromkeys((s.lower().rstrip(":") for s in kind.schemes), kind.reread))
        if paths:
            _PATHS[:] = [kind.reread]
    return kind


def unregister(name: str) -> None:
    """Forget a kind and its schemes (a test's made-up kind, once the test is over)."""
    kind = KINDS.pop(name, None)
    _MODULES.pop(name, None)
    if kind is not None and kind.reread is not None:
        for scheme in [s for s, reader in READERS.items() if reader is kind.reread]:
            del READERS[scheme]


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


def local_path(ref: SourceRef) -> str | None:
    """The local file that holds exactly this ref's bytes (a plain file), or None (an archive member, a server)."""
    kind = kind_of(ref)
    return kind.path(ref) if kind.path is not None else None


def read_ref(ref: SourceRef, max_bytes: int) -> bytes:
    """The bytes of a planned, worker-readable ref, refusing more than `max_bytes`."""
    read = kind_of(ref).read
    if read is None:
        raise InternalError(f"{ref.kind} sources are read by their source's fetch, not by a worker")
    return read(ref, max_bytes)


def modules() -> tuple[str, ...]:
    """The modules that registered a worker-readable kind: a worker process imports them (`load`) before it reads,
    so a kind registered by any module is read in spawned and Ray workers too."""
    readable = {_MODULES[name] for name, kind in KINDS.items() if kind.read is not None}
    return tuple(sorted(name for name in readable if name and name != "__main__"))


def load(names: Iterable[str]) -> None:
    """Import the modules that register kinds in this process (a worker's start)."""
    for name in names:
        importlib.import_module(name)


def forget(uris: Iterable[str], settings: Settings) -> int:
    """Let every kind drop what it keeps of these removed images' sources (e.g. a received CT's kept pixels)."""
    wanted = list(uris)
    return sum(kind.forget(wanted, settings) for kind in KINDS.values() if kind.forget is not None)


def stored_prefix(text: str) -> str:
    """A source (or prefix of one) as a user typed it, spelled as the store spells it: relative paths resolved;
    absolute paths and URIs (a registered scheme, or any 'x://') as given."""
    scheme, colon, _ = text.partition(":")
    if text.startswith(("/", "\\")) or "://" in text or (colon and scheme.lower() in READERS and len(scheme) > 1):
        return text
    return str(Path(text).resolve())


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
