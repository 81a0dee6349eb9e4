"""Rendering an indexed image from its source as PNG thumbnails and previews (indexing windowing); cached."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image as PILImage

from retrieval.imaging.decode import decode_bytes
from retrieval.imaging.types import DecodeLimits
from retrieval.settings import Settings
from retrieval.sources.read import read_source
from retrieval.store.models import Image

SIZES = {"thumbnail": 256, "preview": 1024}


def picture_from_bytes(data: bytes, settings: Settings, frame: int | None = None) -> PILImage.Image:
    """Decode file bytes (a DICOM frame, the middle one by default, or a raster) to a picture, windowed."""
    decoded = decode_bytes(
        data,
        frames=frame if frame is not None else "middle",
        limits=DecodeLimits(max_pixels=settings.max_pixels),
        ct_window=settings.ct_window,
    )
    pixels = np.rint(np.clip(decoded.frames[0].pixels, 0, 1) * 255).astype(np.uint8)
    return PILImage.fromarray(pixels)


def render_png(image: Image, size: int, settings: Settings, data: bytes | None = None) -> bytes:
    """Decode the image's own frame from its source (or the given bytes) as a PNG no larger than size x size."""
    if data is None:
        data = read_source(image.source_uri, settings)
    picture = picture_from_bytes(data, settings, image.frame if image.kind == "dicom" else None)
    picture.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def cached_png(image: Image, kind: str, settings: Settings, data: bytes | None = None) -> bytes:
    """The rendered PNG, from the cache when it is there (keyed by id, kind and content hash)."""
    folder = settings.data_dir / "cache" / kind
    path = folder / f"{image.id}-{image.content_hash[:16]}.png"
    if path.exists():
        return path.read_bytes()
    png = render_png(image, SIZES[kind], settings, data)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(png)
        handle.flush()
        os.fsync(handle.fileno())  # the spool worker deletes a received instance once its renderings are cached
    os.replace(tmp, path)
    return png
