"""Warnings libraries raise about malformed files (pydicom's "Invalid value for VR UI"): counted, not printed."""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections import Counter

LIBRARIES = ("pydicom",)
_KINDS = (
    (re.compile(r"Invalid value for VR (\w+)"), "invalid_vr_{0}"),
    (re.compile(r"End of file reached"), "truncated"),
)


def kind_of(message: str) -> str:
    """A short, bounded label for a warning (never the value it quotes: that may be an identifier)."""
    for pattern, label in _KINDS:
        match = pattern.search(message)
        if match:
            return label.format(*match.groups())
    return "other"


class WarningTally(logging.Handler):
    """Counts the warning records of the libraries it is attached to, by (library, kind); prints nothing."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name.split(".")[0], kind_of(record.getMessage()))
        with self._count_lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Counts so far (a copy)."""
        with self._count_lock:
            return dict(self._counts)


TALLY = WarningTally()


def install() -> WarningTally:
    """Route the libraries' warnings to the tally (idempotent). pydicom logs every warning it issues, so the
    log record is counted and the duplicate `warnings.warn` copy is silenced."""
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        if TALLY not in logger.handlers:
            logger.addHandler(TALLY)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        warnings.filterwarnings("ignore", category=UserWarning, module=name)
    return TALLY
