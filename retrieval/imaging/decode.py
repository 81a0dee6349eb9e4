"""One entry point that turns file bytes (DICOM or raster) into decoded frames plus metadata."""

from __future__ import annotations

import hashlib
import zlib

from retrieval.errors import DecodeError, NotAnImageError, TooLargeError
from retrieval.imaging.dicom import decode_dicom
from retrieval.imaging.raster import decode_raster, looks_like_raster
from retrieval.imaging.types import DecodedImage, DecodeLimits, FramePolicy

GZIP_MAGIC = b"\x1f\x8b"


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """The file inside a gzip, refusing one that inflates beyond `max_bytes` (a gzip bomb) or is cut short."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"gzip data could not be decompressed: {exc}") from exc
    if len(out) > max_bytes:
        raise TooLargeError(f"gzip inflates beyond {max_bytes} bytes (MEDSEARCH_MAX_FILE_BYTES)")
    if not inflater.eof:
        raise DecodeError("truncated gzip file")
    if not out:
        raise DecodeError("empty file inside gzip")
    return out


def content_hash(data: bytes) -> str:
    """SHA-256 of the file bytes (the identity of a non-DICOM image)."""
    return hashlib.sha256(data).hexdigest()


def has_dicom_preamble(data: bytes) -> bool:
    """A DICOM file with its 128-byte preamble and "DICM" (the preamble itself may look like a TIFF header)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def decode_bytes(
    data: bytes,
    *,
    frames: FramePolicy = "middle",
    limits: DecodeLimits | None = None,
    ct_window: str = "soft-tissue",
    ct_channels: str = "window",
) -> DecodedImage:
    """Decode any supported file: DICOM (with or without preamble), PNG, JPEG, TIFF, BMP. `ct_channels` is
    MEDSEARCH_CT_CHANNELS: one window per CT slice, or three HU windows as RGB ("multiwindow")."""
    if not data:
        raise DecodeError("empty file")
    if data[:2] == GZIP_MAGIC:  # one gzipped file (zipMR.gz): read like the file it contains
        data = gunzip(data, (limits or DecodeLimits()).max_bytes)
        if data[:2] == GZIP_MAGIC:
            raise NotAnImageError("gzip inside gzip: decompress the outer layer first")
        if len(data) >= 262 and data[257:262] == b"ustar":
            raise NotAnImageError("a tar archive compressed with gzip: name it .tar.gz or .tgz to index its members")
    digest = content_hash(data)
    if has_dicom_preamble(data):
        return decode_dicom(data, digest, frames=frames, limits=limits, ct_window=ct_window, ct_channels=ct_channels)
    if looks_like_raster(data[:16]):
        return decode_raster(data, digest, limits=limits)
    if data[:4] == b"PK\x03\x04":
        raise NotAnImageError("a zip archive, not an image: name it .zip to index its members")
    # DICOM without the 128-byte preamble: parse leniently but insist on real pixel data.
    return decode_dicom(
        data, digest, frames=frames, limits=limits, ct_window=ct_window, ct_channels=ct_channels, force=True
    )
