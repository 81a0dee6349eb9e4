"""C-STORE-received instances, re-read: de-identified pixels kept for CT (window presets), else the PACS by UIDs."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from retrieval.errors import NotFoundError
from retrieval.fsutil import atomic_write_bytes, private_dir
from retrieval.imaging.dicom import read_dataset
from retrieval.settings import Settings

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
