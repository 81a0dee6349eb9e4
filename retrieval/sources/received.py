"""The C-STORE source: received instances planned from the spool, read from it, and re-read later (the kept
de-identified pixels of a CT for its window presets, else the PACS by UIDs)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from retrieval.errors import NotFoundError
from retrieval.fsutil import atomic_write_bytes, private_dir
from retrieval.imaging.dicom import read_dataset
from retrieval.imaging.series import Header, read_header_file
from retrieval.settings import Settings
from retrieval.sources.base import SourceItem, SourceProblem, SourceRef, read_each
from retrieval.sources.files import close_local, read_local
from retrieval.sources.received_headers import keep_headers, kept_headers
from retrieval.sources.registry import SourceKind, register

if TYPE_CHECKING:
    from retrieval.store.repo import Catalog

KIND = "cstore"  # a spooled instance: `location` is its file in the spool
SCHEME = "dicom:"  # dicom:STUDY/SERIES/SOP (the spooled file itself is deleted once indexed)
FOLDER = "received"  # inside the data folder
KEPT_MODALITIES = ("CT",)  # what window presets apply to
# Allow-list: what decoding and windowing one image needs, nothing that names, dates or locates a patient.
PIXEL_KEYWORDS = (
    "SOPClassUID",
    "Modality",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
    "PixelData",
)


def received_uri(study: str, series: str, sop: str) -> str:
    """The stored identity of an instance received over C-STORE."""
    return f"{SCHEME}{study}/{series}/{sop}"


def kept_path(uri: str, settings: Settings) -> Path:
    """Where the de-identified pixels of a received instance are kept (named by a hash: no UID in a file name)."""
    return settings.data_dir / FOLDER / f"{hashlib.sha256(uri.encode()).hexdigest()}.dcm"


def pixels_only(data: bytes) -> bytes:
    """The instance re-written with the allow-listed pixel and windowing elements alone (no patient, study or
    institution element, no private tag), pixel data as encoded."""
    source = read_dataset(data)
    out = Dataset()
    for keyword in PIXEL_KEYWORDS:
        if keyword in source:
            out[keyword] = source[keyword]
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
    meta.MediaStorageSOPClassUID = source.get("SOPClassUID", source.file_meta.get("MediaStorageSOPClassUID", ""))
    meta.MediaStorageSOPInstanceUID = UID("2.25.0")  # not the instance's: nothing in the file points back to it
    out.file_meta = meta
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def keep_for_presets(uri: str, modality: str | None, data: bytes, settings: Settings) -> Path | None:
    """Keep the de-identified pixels of a received CT instance (durably), so its window presets render without a
    PACS; other modalities are not kept (their cached renderings are all the page needs)."""
    if (modality or "").upper() not in KEPT_MODALITIES:
        return None
    path = kept_path(uri, settings)
    private_dir(path.parent)
    atomic_write_bytes(path, pixels_only(data))
    return path


def discard_kept(uris: Iterable[str], settings: Settings) -> int:
    """Delete the kept pixels of received instances whose images were all removed; returns how many."""
    gone = 0
    for uri in uris:
        path = kept_path(uri, settings)
        if uri.startswith(SCHEME) and path.is_file():
            path.unlink()
            gone += 1
    return gone


def read_received(uri: str, settings: Settings) -> bytes:
    """The kept de-identified pixels of a received instance, else the instance fetched from the PACS by UIDs."""
    path = kept_path(uri, settings)
    if path.is_file():
        return path.read_bytes()
    parts = uri[len(SCHEME) :].split("/")
    if len(parts) != 3 or not all(parts):
        raise NotFoundError(f"malformed received-instance source {uri!r}")
    from retrieval.sources.dicomweb import read_by_uids

    return read_by_uids(parts[0], parts[1], parts[2], settings)


# -- planning and reading the spool (the listener's filesystem bookkeeping is indexer/spool.py's) --------------


def spool_ref(path: Path) -> SourceRef | SourceProblem:
    """A spooled file, identified by the UIDs in its header (headers only, nothing decoded)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        # optional here as in `medsearch index`: some senders' instances lack the study or series UID
        study, series = (str(header.get(k) or "") for k in ("StudyInstanceUID", "SeriesInstanceUID"))
        uids = (study, series, str(header.get("SOPInstanceUID") or path.stem))
    except Exception as exc:
        return SourceProblem(f"spool:{path.name}", "decode_error", f"received instance unreadable: {exc}")
    stat = path.stat()
    return SourceRef(received_uri(*uids), stat.st_size, stat.st_mtime, KIND, str(path))


def copy_uri(ref: SourceRef | SourceProblem, path: Path) -> str:
    """The identity of one received copy's failure: its instance URI plus its spool name (several copies of one
    instance may arrive, with different bytes; each keeps its own record and reason)."""
    return f"{ref.uri}?copy={path.name}" if isinstance(ref, SourceRef) else ref.uri


class SpoolSource:
    """Spooled files as a pipeline source: every one is processed (duplicates are dropped by SOP UID + frame).

    With a data folder, it also plans from headers: a spooled file's header is read from the spool, and a slice
    of a series planned earlier (its bytes deleted since) is known by the planning facts kept for it then."""

    def __init__(self, files: Sequence[Path], max_bytes: int, data_dir: Path | None = None) -> None:
        self.files = list(files)
        self.max_bytes = max_bytes
        self.data_dir = data_dir
        self.refs: list[SourceRef | SourceProblem] = []
        self.read_headers: dict[str, Header] = {}  # spooled file -> its planning facts (kept once planned)
        self._kept: dict[str, dict[str, Header]] = {}  # series -> kept headers by URI

    @classmethod
    def one_copy_each(cls, files: Sequence[Path], max_bytes: int, data_dir: Path | None = None) -> SpoolSource:
        """The oldest copy of each instance among `files` (the others wait for a later batch), so that whatever
        the pipeline records under an instance's URI is that one copy's own outcome."""
        source = cls([], max_bytes, data_dir)
        seen: set[str] = set()
        for path in files:
            ref = spool_ref(path)
            if ref.uri not in seen:
                seen.add(ref.uri)
                source.files.append(path)
                source.refs.append(ref)
        return source

    def plan(self, catalog: Catalog) -> tuple[list[SourceRef | SourceProblem], int]:
        """Every spooled file, identified by its UIDs."""
        if len(self.refs) != len(self.files):
            self.refs = [spool_ref(path) for path in self.files]
        return list(self.refs), 0

    def fetch(self, refs: Sequence[SourceRef | SourceProblem]) -> Iterator[SourceItem]:
        """The spooled bytes, as received (decode workers read them themselves; this serves the others)."""
        return read_each(refs, self.read)

    def read(self, ref: SourceRef) -> bytes:
        """One planned instance's spooled bytes."""
        return read_local(ref, self.max_bytes)

    def header(self, ref: SourceRef) -> Header | None:
        """A spooled file's planning facts (its header, no pixels), or those kept for a slice planned earlier."""
        if ref.location:
            header = read_header_file(ref.location, ref.uri)
            if header is not None:
                self.read_headers[ref.location] = header
            return header
        parts = ref.uri[len(SCHEME) :].split("/")
        if self.data_dir is None or len(parts) != 3:
            return None
        if parts[1] not in self._kept:
            self._kept[parts[1]] = kept_headers(parts[1], self.data_dir)
        return self._kept[parts[1]].get(ref.uri)

    def stored_ref(self, uri: str, size: int, mtime: float, status: str) -> SourceRef | None:
        """An indexed slice of a growing series, as a ref without bytes (the plan keeps it or drops its images,
        never reads it); slices skipped earlier are left as they are: their bytes are gone."""
        if status != "indexed" or not uri.startswith(SCHEME):
            return None
        return SourceRef(uri, size, mtime, KIND, "")

    def keep_headers(self, planned: Iterable[Path]) -> int:
        """Keep the planning facts of these planned spooled files' volume slices (before the files go)."""
        if self.data_dir is None:
            return 0
        return keep_headers([h for p in planned if (h := self.read_headers.get(str(p))) is not None], self.data_dir)

    def close(self) -> None:
        """Nothing is held open."""


register(
    SourceKind(KIND, read=read_local, schemes=(SCHEME,), reread=read_received, close=close_local, forget=discard_kept)
)
