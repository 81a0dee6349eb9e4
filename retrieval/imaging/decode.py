"""One entry point that turns file bytes (DICOM or raster) into decoded frames plus metadata."""

from __future__ import annotations

import hashlib

from retrieval.errors import DecodeError, NotAnImageError
from retrieval.imaging.dicom import decode_dicom
from retrieval.imaging.raster import decode_raster, looks_like_raster
from retrieval.imaging.types import DecodedImage, DecodeLimits, FramePolicy


def content_hash(data: bytes) -> str:
    """SHA-256 of the file bytes (the identity of a non-DICOM image)."""
    return hashlib.sha256(data).hexdigest()


def decode_bytes(
    data: bytes,
    *,
    frames: FramePolicy = "middle",
    limits: DecodeLimits | None = None,
    ct_window: str = "soft-tissue",
) -> DecodedImage:
    """Decode any supported file: DICOM (with or without preamble), PNG, JPEG, TIFF, BMP."""
    if not data:
        raise DecodeError("empty file")
    digest = content_hash(data)
    if len(data) >= 132 and data[128:132] == b"DICM":
        return decode_dicom(data, digest, frames=frames, limits=limits, ct_window=ct_window)
    if looks_like_raster(data[:16]):
        return decode_raster(data, digest, limits=limits)
    if data[:4] in (b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"\x1f\x8b\x08\x08") or data[:2] == b"\x1f\x8b":
        raise NotAnImageError("an archive, not an image (index the archive itself to read its members)")
    # DICOM without the 128-byte preamble: parse leniently but insist on real pixel data.
    return decode_dicom(data, digest, frames=frames, limits=limits, ct_window=ct_window, force=True)
