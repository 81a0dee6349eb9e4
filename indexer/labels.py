"""Sidecar labels and report text (CSV or JSONL) keyed by file path or SOP Instance UID."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.errors import LabelsFileError

PATH_KEYS = ("path", "file", "filename")
UID_KEYS = ("sop_instance_uid", "SOPInstanceUID")


@dataclass
class LabelEntry:
    """What the sidecar says about one image."""

    label: str | None
    report: str | None


@dataclass
class Labels:
    """Label lookups by SOP Instance UID or by absolute source URI."""

    by_uid: dict[str, LabelEntry] = field(default_factory=dict)
    by_uri: dict[str, LabelEntry] = field(default_factory=dict)

    def lookup(self, sop_instance_uid: str | None, uri: str) -> LabelEntry | None:
        """The entry for an image: UID first, then its source path."""
        if sop_instance_uid and sop_instance_uid in self.by_uid:
            return self.by_uid[sop_instance_uid]
        return self.by_uri.get(uri)

    def __len__(self) -> int:
        return len(self.by_uid) + len(self.by_uri)


def _resolve(path_text: str, base: Path) -> str:
    archive, sep, member = path_text.partition("!/")
    full = Path(archive).expanduser()
    if not full.is_absolute():
        full = base / full
    resolved = str(full.resolve())
    return f"{resolved}!/{member}" if sep else resolved


def _pick(row: dict[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def load_labels(path: Path) -> Labels:
    """Read a CSV (header row) or JSONL file with `path` or `sop_instance_uid`, plus `label` and/or `report`.

    Relative paths are resolved against the labels file's folder; archive members are 'archive.zip!/member'.
    """
    if not path.is_file():
        raise LabelsFileError(f"labels file {path} does not exist")
    base = path.resolve().parent
    rows: list[dict[str, str]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append({k: str(v) for k, v in json.loads(line).items() if v is not None})
            except (json.JSONDecodeError, AttributeError) as exc:
                raise LabelsFileError(f"{path}:{number}: not a JSON object ({exc})") from exc
    else:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [dict(r) for r in csv.DictReader(handle)]
    labels = Labels()
    for number, row in enumerate(rows, start=1):
        entry = LabelEntry(label=_pick(row, ("label",)), report=_pick(row, ("report", "text")))
        uid = _pick(row, UID_KEYS)
        file_path = _pick(row, PATH_KEYS)
        if uid:
            labels.by_uid[uid] = entry
        elif file_path:
            labels.by_uri[_resolve(file_path, base)] = entry
        else:
            raise LabelsFileError(f"{path}: row {number} has neither a path nor a sop_instance_uid")
    return labels
