"""MedSigLIP input recipe: [0,1] pixels -> RGB -> centred zero-padded square -> 8-bit -> SigLIP processor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from retrieval.imaging.types import FloatImage

# Bump when anything below changes what a given file embeds to: indexes record it and refuse mixing.
PREPROCESS_VERSION = "medsearch-pre-1"


class ImageProcessor(Protocol):
    """The part of a transformers image processor we use."""

    def __call__(self, images: Any, **kwargs: Any) -> Any: ...


def to_rgb(pixels: FloatImage) -> FloatImage:
    """Grey -> 3 channels; alpha or extra channels dropped."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels[:, :, :3]


def pad_to_square(pixels: FloatImage) -> FloatImage:
    """Zero-pad to a centred square (no crop, no stretch)."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    if height == width:
        return pixels
    out = np.zeros((side, side, *pixels.shape[2:]), dtype=pixels.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = pixels
    return out


def to_model_input(pixels: FloatImage) -> npt.NDArray[np.uint8]:
    """The square RGB image handed to the processor, quantised once so every processor backend agrees."""
    square = pad_to_square(to_rgb(np.clip(pixels, 0.0, 1.0)))
    out: npt.NDArray[np.uint8] = np.rint(square * 255.0).astype(np.uint8)
    return out


def preprocess(images: Sequence[FloatImage], processor: ImageProcessor) -> npt.NDArray[np.float32]:
    """Run the model's own image processor (448x448, mean = std = 0.5): returns (N, 3, H, W) float32."""
    batch = [to_model_input(image) for image in images]
    out = processor(images=batch, return_tensors="np")
    values = np.asarray(out["pixel_values"], dtype=np.float32)
    return values
