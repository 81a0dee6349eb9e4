"""The one labels reader: CSV (header row) or JSONL rows keyed by file path or SOP Instance UID."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.errors import LabelsFileError

PATH_KEYS = ("path", "file", "filename")
UID_KEYS = ("sop_instance_uid", "sopinstanceuid")
STUDY_KEYS = ("study", "study_instance_uid", "studyinstanceuid")  # `medsearch eval` labels whole studies
# every key a JSONL row may have (a misspelt one is an error naming it, not a silently empty column)
JSON_KEYS = frozenset({*PATH_KEYS, *UID_KEYS, *STUDY_KEYS, "label", "report", "text", "patient", "id", "image_id"})


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


@dataclass
class LabelRow:
    """One row of a labels file; `uri` is the path resolved against the file's folder."""

    line: int
    uri: str | None
    uid: str | None
    label: str | None
    report: str | None
    patient: str | None
    image_id: str | None = None  # an `id` / `image_id` column: an indexed image's id (probe training sets)
    study: str | None = None  # a `study` column: a StudyInstanceUID (`medsearch eval` at study level)


@dataclass
class LabelsTable:
    """A labels file as read: its column names (lower case) and its rows."""

    columns: set[str]
    rows: list[LabelRow]


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


def read_labels_table(path: Path) -> LabelsTable:
    """Every row of a CSV or JSONL labels file (columns: path or sop_instance_uid; label, report, patient).

    Relative paths are resolved against the labels file's folder; archive members are 'archive.zip!/member'.
    """
    if not path.is_file():
        raise LabelsFileError(f"labels file {path} does not exist")
    base = path.resolve().parent
    raw: list[tuple[int, dict[str, str]]] = []
    columns: set[str] = set()
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    raw.append((number, {k: str(v) for k, v in item.items() if v is not None}))
                except (json.JSONDecodeError, AttributeError) as exc:
                    raise LabelsFileError(f"{path}:{number}: not a JSON object ({exc})") from exc
                unknown = sorted(k for k in item if k.strip().lower() not in JSON_KEYS)
                if unknown:
                    raise LabelsFileError(
                        f"{path}:{number}: unknown key {', '.join(map(repr, unknown))} "
                        f"(a row takes: {', '.join(sorted(JSON_KEYS))})"
                    )
                columns.update(raw[-1][1])
        else:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                columns.update(reader.fieldnames or [])
                raw = [(number, dict(r)) for number, r in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelsFileError(f"{path} is not a UTF-8 CSV or JSONL file: {exc}") from exc
    rows = []
    for number, values in raw:
        row = {(k or "").strip().lower(): (v or "") for k, v in values.items() if isinstance(v, str)}
        file_path = _pick(row, PATH_KEYS)
        rows.append(
            LabelRow(
                line=number,
                uri=_resolve(file_path, base) if file_path else None,
                uid=_pick(row, UID_KEYS),
                label=_pick(row, ("label",)),
                report=_pick(row, ("report", "text")),
                patient=_pick(row, ("patient",)),
                image_id=_pick(row, ("id", "image_id")),
                study=_pick(row, STUDY_KEYS),
            )
        )
    return LabelsTable({c.strip().lower() for c in columns if c}, rows)


def load_labels(path: Path) -> Labels:
    """Labels and report texts for indexing, looked up by SOP Instance UID or source path."""
    labels = Labels()
    for number, row in enumerate(read_labels_table(path).rows, start=1):
        entry = LabelEntry(label=row.label, report=row.report)
        if row.uid:
            labels.by_uid[row.uid] = entry
        elif row.uri:
            labels.by_uri[row.uri] = entry
        else:
            raise LabelsFileError(f"{path}: row {number} has neither a path nor a sop_instance_uid")
    return labels
