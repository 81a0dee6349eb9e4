"""The C-STORE series gate: single images go at once, a volume's slices wait until their series has been quiet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.series_gate import SeriesGate
from tests.conftest import testdata_file
from tests.phantoms import volume, write_series


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _arrive(paths: list[Path], at: float) -> None:
    for path in paths:
        os.utime(path, (at, at))


@pytest.fixture
def spool(tmp_path: Path) -> tuple[list[Path], list[Path], Path]:
    """Two CT series (arriving at t=190 and t=200) and one single image (CR-like secondary capture, t=150)."""
    first = write_series(tmp_path / "a", volume("sphere", 6, 16), shape="sphere", localizer=False, seed=1).files
    second = write_series(tmp_path / "b", volume("cube", 5, 16), shape="cube", localizer=False, seed=2).files
    single = tmp_path / "single.dcm"
    single.write_bytes(testdata_file("SC_rgb.dcm").read_bytes())
    _arrive(first, 190.0)
    _arrive(second, 200.0)
    _arrive([single], 150.0)
    return first, second, single


def test_single_images_go_at_once_volumes_when_quiet(spool: tuple[list[Path], list[Path], Path]) -> None:
    first, second, single = spool
    files = [*first, *second, single]
    clock = Clock(205.0)
    gate = SeriesGate(quiet_seconds=30.0, clock=clock)
    assert gate.ready(files, limit=100) == [single]  # both series arrived less than 30 s ago
    assert gate.waiting() == len(first) + len(second)
    clock.now = 231.0  # the first series has been quiet for 41 s, the second for 31 s
    assert set(gate.ready(files, limit=100)) == set(files)
    clock.now = 229.0  # the second still arriving (29 s ago): the first goes whole, the single image too
    assert set(gate.ready(files, limit=100)) == {*first, single}


def test_a_growing_series_waits_again(spool: tuple[list[Path], list[Path], Path], tmp_path: Path) -> None:
    first, _, _ = spool
    gate = SeriesGate(quiet_seconds=10.0, clock=Clock(210.0))
    assert set(gate.ready(first, limit=100)) == set(first)
    late = tmp_path / "late.dcm"  # one more slice of the series just came in: the whole series waits for it
    late.write_bytes(first[0].read_bytes())
    _arrive([late], 209.0)
    assert gate.ready([*first, late], limit=100) == []


def test_a_quiet_series_is_never_split_by_the_batch_limit(spool: tuple[list[Path], list[Path], Path]) -> None:
    first, second, single = spool
    gate = SeriesGate(quiet_seconds=1.0, clock=Clock(1000.0))
    chosen = gate.ready([*first, *second, single], limit=2)
    assert chosen == [single, *first]  # oldest first: the single image, then the first series whole, then stop
