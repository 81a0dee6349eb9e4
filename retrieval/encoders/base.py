"""The Encoder protocol and the model fingerprint recorded with every index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from retrieval.imaging.preprocess import ImageProcessor

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelFingerprint:
    """What an index must agree with: model, its config and weights, preprocessing, width."""

    model_id: str
    config_hash: str
    weights_hash: str
    preprocess_version: str
    width: int
    standin: bool = False

    @property
    def key(self) -> str:
        """A short identity: equal keys mean embeddings are comparable."""
        return f"{self.config_hash[:12]}-{self.weights_hash[:12]}-{self.preprocess_version}-{self.width}"


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
