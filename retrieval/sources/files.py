"""Files, folders (recursive), zip and tar(.gz) archives: the ingest source, and the one reader of their bytes."""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from retrieval.errors import DecodeError, NotFoundError, TooLargeError, UnsafeArchiveEntryError
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef, read_each
from retrieval.sources.registry import SourceKind, register

if TYPE_CHECKING:
    from retrieval.settings import Settings
    from retrieval.store.repo import Catalog

ARCHIVE_SEPARATOR = "!/"  # stored URI of an archive member: ARCHIVE!/MEMBER
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
SKIP_NAMES = {".DS_Store", "Thumbs.db"}  # a DICOMDIR is read: its header says it is one (sop_classes)
# Sidecar and document files that sit next to images in archives: never images, so not failures either.
SKIP_SUFFIXES = (
    ".csv",
    ".jsonl",
    ".ndjson",
    ".json",
    ".txt",
    ".md",
    ".xml",
    ".html",
    ".htm",
    ".pdf",
    ".log",
    ".ini",
    ".py",
)


UNSAFE_REASON = "archive entry with an absolute or '..' path refused"


def _ignored(name: str) -> bool:
    base = PurePosixPath(name).name
    return base in SKIP_NAMES or base.startswith(".") or base.lower().endswith(SKIP_SUFFIXES)


def is_archive(path: Path) -> bool:
    """Zip or tar archive, by name."""
    name = path.name.lower()
    return name.endswith(ARCHIVE_SUFFIXES)


def safe_member_name(name: str) -> bool:
    """False for absolute paths, drive letters and any '..' component."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." not in parts


def _zip_refs(path: Path) -> Iterator[SourceRef | SourceProblem]:
    archive = str(path.resolve())
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            uri = f"{archive}!/{info.filename}"
            if not safe_member_name(info.filename):
                yield SourceProblem(uri, UnsafeArchiveEntryError.code, UNSAFE_REASON)
                continue
            if _ignored(info.filename):
                continue
            mtime = float(info.CRC)  # CRC identifies the content; zip timestamps are coarse
            yield SourceRef(uri, info.file_size, mtime, "zip", archive, info.filename)


def _tar_refs(path: Path) -> Iterator[SourceRef | SourceProblem]:
    archive = str(path.resolve())
    with tarfile.open(path, "r:*") as tf:
        for info in tf:
            uri = f"{archive}!/{info.name}"
            if info.isdir():
                continue
            if not safe_member_name(info.name):
                yield SourceProblem(uri, UnsafeArchiveEntryError.code, UNSAFE_REASON)
                continue
            if not info.isfile():  # links, devices, fifos
                yield SourceProblem(uri, "unsupported_entry", "archive entry is not a regular file")
                continue
            if _ignored(info.name):
                continue
            yield SourceRef(uri, info.size, float(info.mtime), "tar", archive, info.name)


def _file_ref(path: Path) -> SourceRef:
    stat = path.stat()
    return SourceRef(str(path.resolve()), stat.st_size, stat.st_mtime, "file", str(path.resolve()))


def _expand(path: Path) -> Iterator[SourceRef | SourceProblem]:
    if is_archive(path):
        try:
            yield from (_zip_refs(path) if path.name.lower().endswith(".zip") else _tar_refs(path))
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            yield SourceProblem(str(path.resolve()), "bad_archive", f"archive could not be read: {exc}")
        return
    yield _file_ref(path)


def iter_sources(paths: list[Path]) -> Iterator[SourceRef | SourceProblem]:
    """Every file under the given paths, in a stable order; archives are opened and listed in place."""
    for root in paths:
        if not root.exists():
            yield SourceProblem(str(root), "not_found", "path does not exist")
            continue
        if root.is_file():
            yield from _expand(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in sorted(filenames):
                if _ignored(name):
                    continue
                full = Path(dirpath) / name
                if full.is_symlink() and not full.exists():
                    continue
                yield from _expand(full)


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


def _read_known_file(path: Path, max_bytes: int) -> bytes:
    """A file that was planned or indexed from `path`: gone since then is said as such."""
    try:
        return read_file(path, max_bytes)
    except NotFoundError as exc:
        raise NotFoundError(f"source file {path} no longer exists (it was indexed from there)") from exc


class ArchiveReader:
    """The one reader of files and archive members; keeps the last archive open while its members stream by."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._open: tuple[str, zipfile.ZipFile | tarfile.TarFile] | None = None

    def _handle(self, archive: str) -> zipfile.ZipFile | tarfile.TarFile:
        if self._open is None or self._open[0] != archive:
            self.close()
            try:
                handle: zipfile.ZipFile | tarfile.TarFile = (
                    zipfile.ZipFile(archive) if archive.lower().endswith(".zip") else tarfile.open(archive, "r:*")  # noqa: SIM115
                )
            except FileNotFoundError as exc:
                raise NotFoundError(f"source archive {archive} no longer exists") from exc
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
                raise DecodeError(f"archive entry could not be read: {exc}") from exc
            self._open = (archive, handle)
        return self._open[1]

    def read(self, ref: SourceRef) -> bytes:
        """The bytes of a planned file (at `location`) or archive member (`member` of the archive at `location`),
        refusing anything larger than the limit."""
        if ref.size > self.max_bytes:
            raise TooLargeError(f"{ref.size} bytes exceed the limit of {self.max_bytes} (MEDSEARCH_MAX_FILE_BYTES)")
        if ref.member is None:
            return _read_known_file(Path(ref.location), self.max_bytes)
        return self.read_member(ref.location, ref.member)

    def read_uri(self, uri: str) -> bytes:
        """The bytes behind a stored file or 'archive!/member' URI."""
        archive, sep, member = uri.partition(ARCHIVE_SEPARATOR)
        if not sep:
            return _read_known_file(Path(uri), self.max_bytes)
        return self.read_member(archive, member)

    def read_member(self, archive: str, member: str) -> bytes:
        """One member of a zip or tar archive, refusing one that inflates beyond the limit."""
        handle = self._handle(archive)
        try:
            if isinstance(handle, zipfile.ZipFile):
                with handle.open(member) as stream:
                    data = stream.read(self.max_bytes + 1)
            else:
                stream_t = handle.extractfile(member)
                if stream_t is None:
                    raise DecodeError("archive entry has no data")
                data = stream_t.read(self.max_bytes + 1)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, KeyError) as exc:
            raise DecodeError(f"archive entry could not be read: {exc}") from exc
        if len(data) > self.max_bytes:
            raise TooLargeError(f"entry inflates beyond {self.max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
        return data

    def close(self) -> None:
        """Close the open archive, if any."""
        if self._open is not None:
            self._open[1].close()
            self._open = None


def read_uri(uri: str, max_bytes: int) -> bytes:
    """Bytes of an indexed file or archive member (URIs come from the store, never from a client)."""
    reader = ArchiveReader(max_bytes)
    try:
        return reader.read_uri(uri)
    finally:
        reader.close()


_LOCAL: dict[int, ArchiveReader] = {}  # per process and size limit: keeps the last archive open between members


def read_local(ref: SourceRef, max_bytes: int) -> bytes:
    """A planned file or archive member, read in whatever process decodes it (the registry's reader)."""
    reader = _LOCAL.get(max_bytes)
    if reader is None:
        reader = _LOCAL[max_bytes] = ArchiveReader(max_bytes)
    return reader.read(ref)


def close_local() -> None:
    """Close the archives `read_local` keeps open in this process."""
    for reader in _LOCAL.values():
        reader.close()


def _reread(uri: str, settings: Settings) -> bytes:
    return read_uri(uri, settings.max_file_bytes)


def _whole_file(ref: SourceRef) -> str | None:
    return ref.location if ref.member is None else None


for _kind in ("file", "zip", "tar"):  # a kind each, one reader: `member` alone says "inside an archive"
    register(SourceKind(_kind, read=read_local, reread=_reread, close=close_local, path=_whole_file), paths=True)


def _unchanged(ref: SourceRef, previous: tuple[int, float] | None) -> bool:
    return previous is not None and previous[0] == ref.size and abs(previous[1] - ref.mtime) < 1e-6


class PathSource:
    """Files, folders and archives; a file whose size and mtime did not change since it was processed is skipped."""

    def __init__(self, paths: Sequence[Path], max_bytes: int) -> None:
        self.paths = list(paths)
        self.reader = ArchiveReader(max_bytes)

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """Every source under the paths that is new or changed."""
        refs = list(iter_sources(self.paths))
        done = catalog.processed_sources([r.uri for r in refs if isinstance(r, SourceRef)])
        todo: list[SourceRef | SourceProblem] = []
        for ref in refs:
            if not (isinstance(ref, SourceRef) and _unchanged(ref, done.get(ref.uri))):
                todo.append(ref)
        return todo, len(refs) - len(todo)

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Read here, in order, one archive open at a time (only for an executor whose workers read nothing:
        decode workers read files and members themselves, through `read_local`)."""
        return read_each(refs, self.reader.read)

    def close(self) -> None:
        """Close the open archive."""
        self.reader.close()
