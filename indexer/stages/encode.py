"""Encode stage: a prepared batch's pixel values -> unit vectors, on whatever device or back end the encoder uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from indexer.stages.batch import Decoded, PreparedBatch
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


def kept_vectors(
    before: Sequence[Decoded], after: PreparedBatch, vectors: Sequence[npt.NDArray[np.float32]], width: int
) -> npt.NDArray[np.float32]:
    """Vectors computed before the write stage dropped known frames (`vectors[i]`: one row per frame of
    `before[i]`), cut to the frames `after` (the same items, from `Writer.new_only`) kept, in `after.keys` order."""
    kept: list[npt.NDArray[np.float32]] = []
    for original, item, rows in zip(before, after.items, vectors, strict=True):
        if item.prepared is None or original.prepared is None:
            continue
        wanted = set(item.prepared.keys)
        kept.append(rows[[i for i, key in enumerate(original.prepared.keys) if key in wanted]])
    if not kept:
        return np.zeros((0, width), dtype=np.float32)
    return np.concatenate(kept).astype(np.float32, copy=False)
