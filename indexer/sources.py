"""Sources of files to index: files, folders (recursive), zip and tar(.gz) archives read in place."""

from __future__ import annotations

import os
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, Protocol

from retrieval.errors import DecodeError, MedsearchError, TooLargeError, UnsafeArchiveEntryError
from retrieval.source_read import read_file

if TYPE_CHECKING:
    from retrieval.store.repo import Catalog

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
SKIP_NAMES = {".DS_Store", "Thumbs.db", "DICOMDIR"}
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


@dataclass(frozen=True)
class SourceRef:
    """Where one file's bytes live; `uri` is its stable identity (archive members: 'archive!/member')."""

    uri: str
    size: int
    mtime: float
    kind: Literal["file", "zip", "tar", "dicomweb", "cstore"]
    container: str
    member: str | None = None


@dataclass(frozen=True)
class SourceProblem:
    """A member or path that cannot be read at all (recorded as a failure)."""

    uri: str
    code: str
    reason: str


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


class ArchiveReader:
    """Reads member bytes for the main process, keeping each archive open while its members stream by."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._open: tuple[str, zipfile.ZipFile | tarfile.TarFile] | None = None

    def _handle(self, ref: SourceRef) -> zipfile.ZipFile | tarfile.TarFile:
        if self._open is None or self._open[0] != ref.container:
            self.close()
            handle: zipfile.ZipFile | tarfile.TarFile = (
                zipfile.ZipFile(ref.container) if ref.kind == "zip" else tarfile.open(ref.container, "r:*")  # noqa: SIM115
            )
            self._open = (ref.container, handle)
        return self._open[1]

    def read(self, ref: SourceRef) -> bytes:
        """The bytes of a file or member, refusing anything larger than the limit."""
        if ref.size > self.max_bytes:
            raise TooLargeError(f"{ref.size} bytes exceed the limit of {self.max_bytes} (MEDSEARCH_MAX_FILE_BYTES)")
        if ref.kind == "file":
            return read_file(Path(ref.uri), self.max_bytes)
        assert ref.member is not None
        handle = self._handle(ref)
        try:
            if isinstance(handle, zipfile.ZipFile):
                with handle.open(ref.member) as stream:
                    data = stream.read(self.max_bytes + 1)
            else:
                stream_t = handle.extractfile(ref.member)
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


@dataclass
class SourceItem:
    """One source ready for decoding: its bytes (None: the decode worker reads the file), or why not."""

    ref: SourceRef
    data: bytes | None = None
    code: str = ""
    reason: str = ""
    read_seconds: float = 0.0


class Source(Protocol):
    """Where a run's images come from: folders and archives, a DICOMweb server, the C-STORE spool."""

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """What to process in this run, and how many sources were left out as already done."""
        ...

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """Each planned source with its bytes (or its failure), in order."""
        ...

    def close(self) -> None:
        """Release whatever the source holds open."""
        ...


def problem_item(problem: SourceProblem) -> SourceItem:
    """A source that could not even be read, as an item the pipeline records as failed."""
    return SourceItem(SourceRef(problem.uri, 0, 0.0, "file", problem.uri), code=problem.code, reason=problem.reason)


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
        """Archive members are read here (in order, one archive open at a time); plain files by the workers."""
        for ref in refs:
            if isinstance(ref, SourceProblem):
                yield problem_item(ref)
                continue
            if ref.kind == "file":
                yield SourceItem(ref)
                continue
            t0 = time.perf_counter()
            try:
                data = self.reader.read(ref)
            except MedsearchError as exc:
                yield SourceItem(ref, code=exc.code, reason=str(exc), read_seconds=time.perf_counter() - t0)
                continue
            yield SourceItem(ref, data, read_seconds=time.perf_counter() - t0)

    def close(self) -> None:
        """Close the open archive."""
        self.reader.close()
