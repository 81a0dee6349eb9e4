"""The Encoder protocol and the model fingerprint recorded with every index."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from retrieval.imaging.preprocess import ImageProcessor
from retrieval.store.fingerprint import ModelFingerprint as ModelFingerprint  # recorded by the store, below encoders

Vectors = npt.NDArray[np.float32]


class Encoder(Protocol):
    """Turns preprocessed images and texts into L2-normalised float32 vectors of one width."""

    @property
    def fingerprint(self) -> ModelFingerprint: ...

    @property
    def image_processor(self) -> ImageProcessor: ...

    @property
    def encoded_by(self) -> str:
        """Back end and precision that write the vectors, e.g. "openvino-bf16" or "torch-fp32-cpu"."""
        ...

    def encode_pixel_values(self, pixel_values: npt.NDArray[np.float32]) -> Vectors: ...

    def encode_texts(self, texts: Sequence[str]) -> Vectors: ...

    def text_scores(self, cosines: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
