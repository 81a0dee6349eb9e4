"""PNG renderings of images: indexed ones from their source (thumbnails, previews; cached), uploads as indexed,
and CT window presets (the page's compare view). Decoded exactly as at indexing time."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset

from retrieval.errors import BadQueryError, DecodeError, WindowNotApplicableError
from retrieval.fsutil import atomic_write_bytes
from retrieval.imaging.decode import decode_bytes, has_dicom_preamble
from retrieval.imaging.dicom import read_dataset
from retrieval.imaging.raster import looks_like_raster
from retrieval.imaging.types import DecodeLimits, ImageMeta
from retrieval.imaging.windowing import CT_PRESETS
from retrieval.settings import Settings
from retrieval.sources.read import read_source
from retrieval.store.models import Image

SIZES = {"thumbnail": 256, "preview": 1024}
PRESET_MODALITY = "CT"
_FILE_VOI = ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTSequence", "VOILUTFunction")


@dataclass(frozen=True)
class Rendering:
    """A PNG and what it shows: file kind, modality, the window applied (as in metadata), and the source frame's
    size and number (the page maps a region drawn on the PNG back to source pixels, and searches that frame)."""

    png: bytes
    kind: str
    modality: str | None
    window: str
    width: int = 0  # the decoded frame's columns and rows, before scaling
    height: int = 0
    frame: int = 1  # 1-based
    frames: int = 1  # the file's number of frames


def _decode_picture(
    data: bytes, settings: Settings, frame: int | None, ct_window: str
) -> tuple[PILImage.Image, ImageMeta, int]:
    """Decode like the indexer (the middle frame unless one is named) to an 8-bit picture, its metadata and the
    (1-based) frame it shows."""
    decoded = decode_bytes(
        data,
        frames=frame if frame is not None else "middle",
        limits=DecodeLimits.of(settings),
        ct_window=ct_window,
    )
    return picture_of(decoded.frames[0].pixels), decoded.meta, decoded.frames[0].frame


def picture_of(pixels: np.ndarray) -> PILImage.Image:
    """Pixels in [0, 1] (grey, or RGB as H x W x 3) as an 8-bit picture."""
    return PILImage.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def png_of(picture: PILImage.Image, size: int) -> bytes:
    """The picture scaled into size x size, as PNG."""
    picture.thumbnail((size, size), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def picture_from_bytes(data: bytes, settings: Settings, frame: int | None = None) -> PILImage.Image:
    """Decode file bytes (a DICOM frame, the middle one by default, or a raster) to a picture, windowed."""
    return _decode_picture(data, settings, frame, settings.ct_window)[0]


def render_png(image: Image, size: int, settings: Settings, data: bytes | None = None) -> bytes:
    """Decode the image's own frame from its source (or the given bytes) as a PNG no larger than size x size."""
    if data is None:
        data = read_source(image.source_uri, settings)
    return png_of(picture_from_bytes(data, settings, image.frame if image.kind == "dicom" else None), size)


def cached_png(image: Image, kind: str, settings: Settings, data: bytes | None = None) -> bytes:
    """The rendered PNG, from the cache when it is there (keyed by id, kind and content hash)."""
    path = settings.data_dir / "cache" / kind / f"{image.id}-{image.content_hash[:16]}.png"
    if path.exists():
        return path.read_bytes()
    png = render_png(image, SIZES[kind], settings, data)
    atomic_write_bytes(path, png)  # durable: the spool worker deletes a received instance once it is cached
    return png


def check_window(name: str) -> str:
    """A known preset name, or a bad_query error that lists them."""
    if name not in CT_PRESETS:
        raise BadQueryError(f"unknown window {name!r}; one of: {', '.join(CT_PRESETS)}")
    return name


def _without_file_voi(data: bytes) -> bytes:
    """The file re-written without its own window/VOI LUT, so the decoder applies the CT preset instead."""
    ds: Dataset = read_dataset(data, force=not has_dicom_preamble(data))
    modality = str(ds.get("Modality") or "").upper() or "no modality"
    if modality != PRESET_MODALITY:
        raise WindowNotApplicableError(f"window presets apply to CT images only; this image is {modality}")
    for keyword in _FILE_VOI:
        if keyword in ds:
            delattr(ds, keyword)
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=False)
    except Exception as exc:  # a dataset pydicom read but cannot write back
        raise DecodeError(f"the file could not be re-windowed: {type(exc).__name__}: {exc}") from exc
    return out.getvalue()


def render(
    data: bytes, size: int, settings: Settings, *, window: str | None = None, frame: int | None = None
) -> Rendering:
    """Decode like the indexer (the middle frame unless one is named) and scale into size x size.

    Without `window` the picture is windowed exactly as at indexing time; with one (a CT preset name) the
    file's own window is set aside and the preset applied. A preset on a raster or a non-CT DICOM is a
    bad_query error that says why.
    """
    if window is not None:
        check_window(window)
        if not has_dicom_preamble(data) and looks_like_raster(data[:16]):
            raise WindowNotApplicableError("window presets apply to CT DICOM images; this is a PNG/JPEG/TIFF picture")
        data = _without_file_voi(data)
    picture, meta, shown = _decode_picture(data, settings, frame, window or settings.ct_window)
    width, height = picture.size  # before png_of scales it down in place
    return Rendering(
        png=png_of(picture, size),
        kind=meta.kind,
        modality=meta.modality,
        window=meta.window or "",
        width=width,
        height=height,
        frame=shown,
        frames=meta.number_of_frames,
    )


def render_indexed(image: Image, size: int, settings: Settings, window: str) -> Rendering:
    """An indexed image's own frame under a CT preset, read from its source (not cached: presets vary)."""
    check_window(window)
    if image.kind != "dicom":
        raise WindowNotApplicableError("window presets apply to CT DICOM images; this image is a PNG/JPEG/TIFF picture")
    if (image.modality or "").upper() != PRESET_MODALITY:
        raise WindowNotApplicableError(
            f"window presets apply to CT images only; this image is {image.modality or 'no modality'}"
        )
    return render(read_source(image.source_uri, settings), size, settings, window=window, frame=image.frame)
