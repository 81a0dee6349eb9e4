"""PNG / JPEG / TIFF decoding (8- and 16-bit grey, RGB, alpha dropped) with decompression-bomb guards."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from retrieval.errors import DecodeError, TooLargeError
from retrieval.imaging.types import DecodedFrame, DecodedImage, DecodeLimits, FloatImage, ImageMeta

RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")


def looks_like_raster(head: bytes) -> bool:
    """True when the first bytes are a PNG, JPEG, TIFF or BMP signature."""
    return any(head.startswith(magic) for magic in RASTER_MAGIC)


def _scale(arr: np.ndarray, mode: str) -> FloatImage:
    out: FloatImage
    if arr.dtype == np.uint8 or arr.dtype == bool:
        out = arr.astype(np.float32) / np.float32(1.0 if arr.dtype == bool else 255.0)
        return out
    if arr.dtype == np.uint16 or mode.startswith("I;16"):
        out = np.clip(arr.astype(np.float32) / np.float32(65535.0), 0, 1)
        return out
    if mode == "I":  # Pillow's 32-bit integer mode; 16-bit PNGs may open like this
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(np.iinfo(np.int32).max)
        out = np.clip(arr.astype(np.float32) / np.float32(top), 0, 1)
        return out
    values = arr.astype(np.float64)  # mode F: no dtype maximum, stretch its range
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if high <= low:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def decode_raster(data: bytes, content_hash: str, *, limits: DecodeLimits | None = None) -> DecodedImage:
    """Decode a raster image to [0, 1] pixels (grey stays grey; alpha is dropped)."""
    limits = limits or DecodeLimits()
    # Pillow's own guard (89 M pixels by default) would otherwise win over MEDSEARCH_MAX_PIXELS either way; with it
    # set to the same number, its warning fires exactly where ours does and is refused the same
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    too_large = f"exceeds the limit of {limits.max_pixels} pixels (MEDSEARCH_MAX_PIXELS)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only: the size is known before any decoding
            width, height = image.size
            if width * height > limits.max_pixels:
                raise TooLargeError(f"image of {width}x{height} pixels {too_large}")
            image.load()
    except TooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLargeError(f"image {too_large}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not a supported image (PNG, JPEG, TIFF or DICOM expected)") from exc
    except Exception as exc:  # truncated or corrupt streams
        raise DecodeError(f"image could not be decoded: {type(exc).__name__}: {exc}") from exc
    converted: Image.Image = image
    if image.mode == "P":
        converted = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        converted = image.convert("RGB")
    elif image.mode == "1":
        converted = image.convert("L")
    mode = converted.mode
    arr = np.asarray(converted)
    if mode in ("LA", "La", "PA"):
        arr = arr[..., 0]
        mode = "L"
    elif mode in ("RGBA", "RGBa", "RGBX"):
        arr = arr[..., :3]
        mode = "RGB"
    pixels = _scale(arr, mode)
    meta = ImageMeta(
        kind="raster",
        content_hash=content_hash,
        rows=int(pixels.shape[0]),
        columns=int(pixels.shape[1]),
        photometric="RGB" if pixels.ndim == 3 else "MONOCHROME2",
        window="dtype-max",
    )
    return DecodedImage(meta=meta, frames=[DecodedFrame(pixels=pixels, frame=1)])
