"""Plain data types that decoding produces: pixels in [0, 1] plus the metadata we keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import numpy.typing as npt

from retrieval.imaging.sr_text import Identifiers
from retrieval.settings import Settings

FramePolicy = Literal["middle", "all"] | int | tuple[int, ...]  # an int picks one 1-based frame, a tuple several
FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against hostile input."""

    max_pixels: int = 120_000_000
    max_frames: int = 4096
    max_bytes: int = 2 * 1024**3  # what a compressed file (gzip) may inflate to (MEDSEARCH_MAX_FILE_BYTES)

    @classmethod
    def of(cls, settings: Settings) -> DecodeLimits:
        """The limits a collection's settings set (MEDSEARCH_MAX_PIXELS, MEDSEARCH_MAX_FILE_BYTES): indexing,
        queries, renders and calibration decode under the same ones."""
        return cls(max_pixels=settings.max_pixels, max_bytes=settings.max_file_bytes)


@dataclass
class ImageMeta:
    """Metadata of one instance. `patient_id` is transient: it is hashed before storage, never logged."""

    kind: Literal["dicom", "raster"]
    content_hash: str
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    study_date: date | None = None
    sex: str | None = None
    age: str | None = None
    manufacturer: str | None = None
    rows: int | None = None
    columns: int | None = None
    photometric: str | None = None
    number_of_frames: int = 1
    transfer_syntax: str | None = None
    window: str | None = None
    patient_id: str | None = field(default=None, repr=False)
    accession_number: str | None = field(default=None, repr=False)  # transient too: stored only as a salted hash
    identifiers: Identifiers | None = field(default=None, repr=False)  # header values to scrub from its reports

    def __repr__(self) -> str:  # never print the identifier
        return f"ImageMeta(kind={self.kind!r}, sop={self.sop_instance_uid!r}, modality={self.modality!r})"


@dataclass
class DecodedFrame:
    """One frame as float32 pixels in [0, 1]: (H, W) grey or (H, W, 3) RGB. `frame` is 1-based."""

    pixels: FloatImage
    frame: int


@dataclass
class DecodedImage:
    """A decoded file: its metadata and the frames chosen by the frame policy."""

    meta: ImageMeta
    frames: list[DecodedFrame]

    def instance_key(self, frame: int) -> str:
        """Identity used for de-duplication: SOP Instance UID + frame, or the content hash."""
        if self.meta.sop_instance_uid:
            return f"dicom:{self.meta.sop_instance_uid}:{frame}"
        return f"sha256:{self.meta.content_hash}:{frame}"
