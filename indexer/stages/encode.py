"""Encode stage: a prepared batch's pixel values -> unit vectors, on whatever device or back end the encoder uses."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from retrieval.encoders.base import Encoder


def encode_pixel_batch(
    encoder: Encoder, pixel_values: npt.NDArray[np.float32], batch_size: int, width: int
) -> npt.NDArray[np.float32]:
    """(N, 3, H, W) prepared frames -> (N, width) float32 unit vectors, `batch_size` frames per forward pass."""
    if len(pixel_values) == 0:
        return np.zeros((0, width), dtype=np.float32)
    size = max(1, batch_size)
    parts = [encoder.encode_pixel_values(pixel_values[i : i + size]) for i in range(0, len(pixel_values), size)]
    return np.concatenate(parts).astype(np.float32)
