"""The page's viewer: an indexed image's frame from its source at a free window (centre/width), or inverted."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import ImageOps
from pydicom.dataset import Dataset

from retrieval.errors import WindowNotApplicableError
from retrieval.imaging.decode import GZIP_MAGIC, gunzip, has_dicom_preamble
from retrieval.imaging.dicom import grey_frame
from retrieval.imaging.types import DecodeLimits, ImageMeta
from retrieval.imaging.windowing import CT_PRESETS, apply_window, has_file_voi
from retrieval.render import SIZES, picture_from_bytes, picture_of, png_of
from retrieval.settings import Settings
from retrieval.sources.read import read_source
from retrieval.store.models import Image

LEVEL_LIMIT = 1_000_000.0  # |centre| and width bound: far beyond any HU or 32-bit stored range a window needs
CACHE_BYTES = 256 * 1024**2  # decoded frames kept for a drag, by their values and file bytes (the newest always)


@dataclass(frozen=True)
class ViewWindow:
    """A linear VOI window (PS3.3 C.11.2.1.2) and where it came from: `request`, `file`, `ct:<preset>`, `range`."""

    centre: float
    width: float
    units: str  # "HU" for CT, "stored" (after the modality LUT) otherwise
    origin: str


@dataclass(frozen=True)
class View:
    """A PNG of one frame and what it shows: the frame, the window (None: not a grey DICOM), inversion."""

    png: bytes
    frame: int
    frames: int
    window: ViewWindow | None
    inverted: bool
    columns: int  # the source frame's size in pixels (the PNG may be scaled down to 1024)
    rows: int


_cache: OrderedDict[tuple[int, str, int | None], tuple[np.ndarray, Dataset, ImageMeta, int]] = OrderedDict()
_cache_lock = threading.Lock()


def _frame(image: Image, frame: int | None, settings: Settings) -> tuple[np.ndarray, Dataset, ImageMeta]:
    """The grey frame after the modality LUT, decoded once per drag (a few recent frames are kept)."""
    key = (image.id, image.content_hash, frame)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key][:3]
    limits = DecodeLimits.of(settings)
    data = read_source(image.source_uri, settings)
    if data[:2] == GZIP_MAGIC:
        data = gunzip(data, limits.max_bytes)
    values, ds, meta = grey_frame(data, frame, limits, force=not has_dicom_preamble(data))
    with _cache_lock:
        _cache[key] = (values, ds, meta, values.nbytes + len(data))
        while len(_cache) > 1 and sum(entry[3] for entry in _cache.values()) > CACHE_BYTES:
            _cache.popitem(last=False)
    return values, ds, meta


def default_window(values: np.ndarray, ds: Dataset, meta: ImageMeta, ct_window: str) -> ViewWindow:
    """The window a frame opens with: the file's own (first) window, else the CT preset in use, else the
    frame's value range (centre and width chosen so that its minimum is black and its maximum white)."""
    units = "HU" if meta.modality == "CT" else "stored"
    if has_file_voi(ds) and not ds.get("VOILUTSequence"):
        centre, width = ds.WindowCenter, ds.WindowWidth
        first = [v[0] if getattr(v, "__len__", None) and not isinstance(v, str) else v for v in (centre, width)]
        return ViewWindow(centre=float(first[0]), width=float(first[1]), units=units, origin="file")
    if meta.modality == "CT" and ct_window in CT_PRESETS:
        width, centre = CT_PRESETS[ct_window]
        return ViewWindow(centre=centre, width=width, units=units, origin=f"ct:{ct_window}")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return ViewWindow(centre=(low + high + 1.0) / 2.0, width=max(high - low + 1.0, 1.0), units=units, origin="range")


def view_indexed(
    image: Image,
    settings: Settings,
    *,
    centre: float | None = None,
    width: float | None = None,
    frame: int | None = None,
    invert: bool = False,
) -> View:
    """The image's frame (its own unless one is named) at the window asked for, as a preview-size PNG.

    A missing centre or width is the default window's; the width is at least 1 (PS3.3 C.11.2.1.2). A raster
    picture or a colour DICOM has no window: asking for one is a window_not_applicable error; without one it is
    shown as indexed (inverted when asked)."""
    wanted = frame if frame is not None else image.frame
    if image.kind != "dicom" or (image.photometric or "").upper() not in ("MONOCHROME1", "MONOCHROME2"):
        if centre is not None or width is not None:
            what = "a PNG/JPEG/TIFF picture" if image.kind != "dicom" else f"{image.photometric or 'colour'} DICOM"
            raise WindowNotApplicableError(f"window/level applies to grey DICOM images; this image is {what}")
        data = read_source(image.source_uri, settings)
        picture = picture_from_bytes(data, settings, wanted if image.kind == "dicom" else None)
        if invert:
            picture = ImageOps.invert(picture.convert("RGB" if picture.mode not in ("L", "RGB") else picture.mode))
        frames = image.number_of_frames if image.kind == "dicom" else 1
        columns, rows = picture.size
        return View(png_of(picture, SIZES["preview"]), wanted, frames, None, invert, columns, rows)
    values, ds, meta = _frame(image, wanted, settings)
    default = default_window(values, ds, meta, settings.ct_window)
    if centre is None and width is None:
        window = default
    else:
        window = ViewWindow(
            centre=default.centre if centre is None else centre,
            width=max(1.0, default.width if width is None else width),
            units=default.units,
            origin="request",
        )
    out = apply_window(values, ds, window.width, window.centre)
    if (meta.photometric or "").upper() == "MONOCHROME1":
        out = 1.0 - out
    if invert:
        out = 1.0 - out
    png = png_of(picture_of(out), SIZES["preview"])
    return View(png, wanted, meta.number_of_frames, window, invert, values.shape[1], values.shape[0])
