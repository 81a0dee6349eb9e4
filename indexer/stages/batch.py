"""The plain data passed between ingest stages: one decoded source, and a batch of them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from retrieval.imaging.sr_text import SrDocument
from retrieval.prepare import PreparedImage
from retrieval.sources.base import SourceRef


@dataclass
class Decoded:
    """One source after the decode stage: its prepared frames, or the failure code and reason."""

    ref: SourceRef
    prepared: PreparedImage | None = None
    code: str = ""
    reason: str = ""
    read_seconds: float = 0.0
    not_image: str = ""  # a non-image DICOM object's SOP class name: recorded as skipped, not as a failure
    duplicate_of: str = ""  # every frame repeats an instance already indexed from this source
    report: SrDocument | None = None  # a structured report read from the source (with `not_image`: its SOP class)

    @property
    def frame_count(self) -> int:
        """Frames ready for the encoder (0 for a failure)."""
        return len(self.prepared.keys) if self.prepared is not None else 0


@dataclass
class PreparedBatch:
    """Decoded sources for one encoder pass and one transaction; `duplicates`: frames dropped as already stored."""

    items: list[Decoded] = field(default_factory=list)
    duplicates: int = 0

    @property
    def keys(self) -> list[str]:
        """Instance keys of every prepared frame, in order."""
        return [k for item in self.items if item.prepared is not None for k in item.prepared.keys]

    def pixel_values(self) -> npt.NDArray[np.float32]:
        """Every prepared frame stacked in order: (N, 3, H, W), the encode stage's input."""
        parts = [item.prepared.pixel_values for item in self.items if item.prepared is not None]
        parts = [p for p in parts if len(p)]
        if not parts:
            return np.zeros((0, 3, 0, 0), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass
class Outcome:
    """One source as an executor hands it back: decoded (pixels may be dropped once encoded) and, when an
    encoder away from the runner embedded it, its vectors, that encoder's name and its share of computing time."""

    decoded: Decoded
    vectors: npt.NDArray[np.float32] | None = None
    encode_seconds: float = 0.0
    worker: str = ""
    encoded_by: str = ""
