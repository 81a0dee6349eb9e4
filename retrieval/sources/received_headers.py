"""Planning facts of received volume slices, kept after their bytes are gone, so a growing series is re-planned."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retrieval.fsutil import atomic_write_text, private_dir
from retrieval.imaging.series import VOLUME_MODALITIES, Header

FOLDER = "received/series"  # inside the data folder: one JSON per series, named by a hash (no UID in a file name)
TUPLES = ("image_type", "position", "orientation", "frame_positions", "frame_orientations")


def headers_path(series_uid: str, data_dir: Path) -> Path:
    """The file holding the kept headers of one series."""
    return data_dir / FOLDER / f"{hashlib.sha256(series_uid.encode()).hexdigest()}.json"


def worth_keeping(header: Header) -> bool:
    """A single-frame slice of a CT/MR/PET series: what a later re-plan of its series may keep without its bytes
    (a multi-frame object is re-planned frame by frame, which needs its bytes: not kept)."""
    return bool(header.series_instance_uid) and header.modality in VOLUME_MODALITIES and header.number_of_frames == 1


def keep_headers(headers: Iterable[Header], data_dir: Path) -> int:
    """Add these headers to their series' files (UIDs, geometry, sizes: nothing that names a patient); returns
    how many were kept."""
    by_series: dict[str, list[Header]] = {}
    for header in headers:
        if worth_keeping(header):
            by_series.setdefault(str(header.series_instance_uid), []).append(header)
    for uid, members in by_series.items():
        path = headers_path(uid, data_dir)
        private_dir(path.parent)
        stored = _load(path)
        stored.update({h.key: dataclasses.asdict(h) for h in members})
        atomic_write_text(path, json.dumps(stored, sort_keys=True))
    return sum(len(m) for m in by_series.values())


def kept_headers(series_uid: str, data_dir: Path) -> dict[str, Header]:
    """The kept headers of a series, by source URI (empty when none were kept)."""
    out: dict[str, Header] = {}
    for key, fields in _load(headers_path(series_uid, data_dir)).items():
        try:
            values = {k: _tuples(v) if k in TUPLES else v for k, v in fields.items()}
            out[key] = Header(**values)
        except TypeError:  # written by another version: that slice is left as it is
            continue
    return out


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
