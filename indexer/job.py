"""What an ingest run is given and what it reports: options, the progress sink, the summary, the executors' job."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from indexer.stages.decode import DecodeConfig
from retrieval.collection import Collection
from retrieval.encoders.base import Encoder
from retrieval.imaging.series import parse_slices
from retrieval.imaging.types import FramePolicy
from retrieval.labels import Labels
from retrieval.settings import Settings
from retrieval.store.repo import FailureRecord

STAGES = ("read", "decode", "preprocess", "encode", "write")


class Progress(Protocol):
    """What the pipeline reports as it goes (the CLI draws a bar; tests may count)."""

    def start(self, total: int) -> None: ...

    def advance(self, sources: int, images: int) -> None: ...

    def finish(self) -> None: ...


class FromSettings(enum.Enum):
    """An option left to the collection's settings (MEDSEARCH_*), for a library caller who does not pass it."""

    SETTING = "setting"


FROM_SETTINGS = FromSettings.SETTING


@dataclass
class IndexOptions:
    """How to run an indexing job."""

    frames: FramePolicy = "middle"
    workers: int = 2
    batch_size: int = 16
    labels: Labels | None = None
    # K slices sampled per volume; None: every slice; FROM_SETTINGS: MEDSEARCH_SERIES_SLICES (16 unless set)
    series_slices: int | FromSettings | None = FROM_SETTINGS

    def slices(self, settings: Settings) -> int | None:
        """The K this run samples: the option when given (the CLI's --series-slices), else the setting."""
        if isinstance(self.series_slices, FromSettings):
            return parse_slices(settings.series_slices)
        return self.series_slices


@dataclass
class IndexSummary:
    """What a run did, and how fast each stage went."""

    sources: int = 0
    indexed: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    decoded: int = 0  # frames decoded (indexed + duplicates): the work the read/decode stages did
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    failures: list[FailureRecord] = field(default_factory=list)
    not_images: dict[str, int] = field(default_factory=dict)  # skipped non-image objects by SOP class name
    reports: int = 0  # structured reports stored as their study's report
    sampled_out: int = 0  # volume slices (instances or frames) of the series planned here, not among the K sampled
    excluded: int = 0  # slices left out of their series' volume (localizers, other orientations or sizes...)
    removed: int = 0  # images of slices no longer sampled (a re-plan on another K), taken out of the index

    @property
    def encoder_calls_saved(self) -> int:
        """Encoder calls series planning saved in the series planned here (one per slice not encoded)."""
        return self.sampled_out + self.excluded

    def count_not_images(self, by_class: dict[str, int]) -> None:
        """Add a write's skipped non-image objects (structured reports, RT plans, ECGs...) to the run's."""
        for name, count in by_class.items():
            self.not_images[name] = self.not_images.get(name, 0) + count

    def images_per_second(self) -> dict[str, float]:
        """Throughput of each stage alone (images / seconds spent in it) and overall."""
        done = {"read": self.decoded, "decode": self.decoded, "preprocess": self.decoded}
        out = {s: (done.get(s, self.indexed) / t if t > 0 else 0.0) for s, t in self.stage_seconds.items()}
        out["overall"] = self.indexed / self.seconds if self.seconds > 0 else 0.0
        return out

    @property
    def encoder_busy(self) -> float:
        """Fraction of wall time the encoder was computing."""
        return self.stage_seconds["encode"] / self.seconds if self.seconds > 0 else 0.0

    def count_encoded(self, worker: str, frames: int, seconds: float) -> None:
        """Frames an encoder process away from the runner embedded, and its computing time."""
        self.stage_seconds["encode"] += seconds


@dataclass
class Job:
    """What an executor is started with: the collection, the driver's loaded encoder, the decode config."""

    collection: Collection
    encoder: Encoder
    config: DecodeConfig
    options: IndexOptions
    width: int
