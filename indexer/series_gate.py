"""C-STORE arrivals -> ready to plan: single images at once, a volume's slices once their series has been quiet."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from retrieval.imaging.series import VOLUME_MODALITIES, read_header_file


@dataclass(frozen=True)
class Arrival:
    """What the gate needs of one spooled file: its series, whether it waits for the rest, when it came."""

    path: Path
    series: str
    waits: bool
    arrived: float


def read_arrival(path: Path) -> Arrival:
    """The header facts of a spooled file (no pixel data read): a slice of a CT/MR/PET series waits for the rest;
    anything else (single images, a file without a readable header: it fails now) goes at once."""
    arrived = path.stat().st_mtime
    header = read_header_file(str(path), path.name)
    if header is None or not header.series_instance_uid:
        return Arrival(path, "", False, arrived)
    waits = header.modality in VOLUME_MODALITIES
    return Arrival(path, header.series_instance_uid, waits, arrived)


class SeriesGate:
    """Decides which spooled files go into the next run. A file of a volume modality waits until no instance of
    its series arrived for `quiet_seconds`, then its whole series goes at once (it is planned as a whole); every
    other file goes at once. Header facts are read once per spooled file (spool names are never reused)."""

    def __init__(self, quiet_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._known: dict[Path, Arrival] = {}

    def ready(self, files: Sequence[Path], limit: int) -> list[Path]:
        """The oldest ready files, about `limit` of them: a quiet series is never split (it may exceed `limit`)."""
        arrivals = [self._known.get(path) or read_arrival(path) for path in files]
        self._known = {a.path: a for a in arrivals}  # forget files that left the spool
        last: dict[str, float] = {}
        for arrival in arrivals:
            if arrival.waits:
                last[arrival.series] = max(last.get(arrival.series, 0.0), arrival.arrived)
        now = self.clock()
        chosen: list[Path] = []
        taken: set[str] = set()
        for arrival in sorted(arrivals, key=lambda a: (a.arrived, a.path.name)):
            if len(chosen) >= limit:
                break
            if not arrival.waits:
                chosen.append(arrival.path)
            elif arrival.series not in taken and now - last[arrival.series] >= self.quiet_seconds:
                taken.add(arrival.series)
                chosen.extend(a.path for a in arrivals if a.waits and a.series == arrival.series)
        return chosen

    def waiting(self) -> int:
        """How many known files wait for their series to be quiet (as of the last `ready`)."""
        return sum(1 for a in self._known.values() if a.waits)
