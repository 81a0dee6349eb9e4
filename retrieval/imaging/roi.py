"""Region-of-interest queries: parse `x,y,w,h` (source pixels) and crop a decoded frame, refusing bad regions."""

from __future__ import annotations

from retrieval.errors import BadQueryError, RegionOutsideError
from retrieval.imaging.types import FloatImage

Region = tuple[int, int, int, int]
MIN_SIDE = 8  # pixels: a smaller region holds too little for the model (it is padded and resized to 448)


def parse_roi(text: str) -> Region:
    """`x,y,w,h` as four non-negative integers (pixel coordinates of the source image, origin top left)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise BadQueryError(f"roi {text!r} is not x,y,w,h: four non-negative whole numbers of source pixels")
    x, y, w, h = (int(p) for p in parts)
    return x, y, w, h


def check_roi(roi: Region, width: int, height: int) -> None:
    """Refuse a region that is empty, tiny, or not inside a `width` x `height` image, naming the problem."""
    x, y, w, h = roi
    if w == 0 or h == 0:
        raise BadQueryError(f"roi {x},{y},{w},{h} is empty: width and height must be at least {MIN_SIDE} pixels")
    if w < MIN_SIDE or h < MIN_SIDE:
        raise BadQueryError(f"roi {x},{y},{w},{h} is too small: width and height must be at least {MIN_SIDE} pixels")
    if x >= width or y >= height:
        raise RegionOutsideError(f"roi {x},{y},{w},{h} starts outside the {width}x{height} image")
    if x + w > width or y + h > height:
        raise RegionOutsideError(
            f"roi {x},{y},{w},{h} reaches outside the {width}x{height} image (x + w <= {width}, y + h <= {height})"
        )


def crop(pixels: FloatImage, roi: Region) -> FloatImage:
    """The region of one decoded frame ((H, W) or (H, W, 3)), after windowing and before preprocessing."""
    height, width = pixels.shape[:2]
    check_roi(roi, width, height)
    x, y, w, h = roi
    return pixels[y : y + h, x : x + w].copy()
