"""Bytes -> model-ready pixel values: the one code path shared by indexing and by queries."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from retrieval.imaging.decode import decode_bytes
from retrieval.imaging.preprocess import ImageProcessor, preprocess
from retrieval.imaging.roi import Region, crop
from retrieval.imaging.types import DecodedImage, DecodeLimits, FramePolicy, ImageMeta


@dataclass
class PreparedImage:
    """A decoded file's chosen frames, preprocessed for the encoder, plus timings per stage."""

    meta: ImageMeta
    frames: list[int]
    keys: list[str]
    pixel_values: npt.NDArray[np.float32]
    timings: dict[str, float] = field(default_factory=dict)
    pixel_hashes: list[str] = field(default_factory=list)  # per frame: what the encoder sees (pixel_hash)


def pixel_hash(values: npt.NDArray[np.float32]) -> str:
    """SHA-256 of one frame's preprocessed pixel values (shape and dtype included): equal hashes mean the encoder
    gets exactly the same input, whatever file, transfer syntax or frame it came from."""
    frame = np.ascontiguousarray(values, dtype=np.float32)
    digest = hashlib.sha256(repr(frame.shape).encode())
    digest.update(frame.data.cast("B"))
    return digest.hexdigest()


def prepare_bytes(
    data: bytes,
    processor: ImageProcessor,
    *,
    frames: FramePolicy = "middle",
    limits: DecodeLimits | None = None,
    ct_window: str = "soft-tissue",
    ct_channels: str = "window",
    roi: Region | None = None,
) -> PreparedImage:
    """Decode then preprocess; raises a DecodeError subclass on bad input. With `roi` (x,y,w,h in source pixels)
    only that region of each frame goes on: cropped after windowing, then padded and resized like a whole image."""
    t0 = time.perf_counter()
    decoded: DecodedImage = decode_bytes(
        data, frames=frames, limits=limits, ct_window=ct_window, ct_channels=ct_channels
    )
    t1 = time.perf_counter()
    values = preprocess([f.pixels if roi is None else crop(f.pixels, roi) for f in decoded.frames], processor)
    t2 = time.perf_counter()
    numbers = [f.frame for f in decoded.frames]
    return PreparedImage(
        meta=decoded.meta,
        frames=numbers,
        keys=[decoded.instance_key(n) for n in numbers],
        pixel_values=values,
        timings={"decode": t1 - t0, "preprocess": t2 - t1},
        pixel_hashes=[pixel_hash(v) for v in values],
    )
