"""`reports import`: CSV or JSONL rows keyed by StudyInstanceUID or AccessionNumber become de-identified reports."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from retrieval.collection import Collection
from retrieval.errors import MedsearchError, ReportInputError
from retrieval.imaging.dicom import read_dataset
from retrieval.imaging.sr_text import Identifiers, header_identifiers
from retrieval.privacy import hash_accession
from retrieval.reports.prepare import prepare_report
from retrieval.sources.read import read_source

log = logging.getLogger(__name__)
MAX_IMPORT_BYTES = 2 * 1024**3
# accepted column / key names, compared lower-cased without spaces and underscores
STUDY_KEYS = ("studyinstanceuid", "studyuid", "study")
ACCESSION_KEYS = ("accessionnumber", "accession")
TEXT_KEYS = ("report", "text", "reporttext")
DATE_KEYS = ("date", "reportdate", "written", "writtenat")


@dataclass
class ImportSummary:
    """What one import did (row numbers count from 1 = the first data row)."""

    rows: int = 0
    stored: int = 0
    duplicates: int = 0  # the same report already stored for that study (imported twice)
    waiting: int = 0  # stored for a study with no indexed image yet: attached when its images arrive
    truncated: int = 0
    not_utf8: bool = False  # the file was not UTF-8: read as Windows-1252
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row, why)


def import_reports(collection: Collection, path: Path) -> ImportSummary:
    """Import every row of a CSV or JSONL file; a row that cannot be used is rejected with its reason, the rest go on.

    Rows keyed by AccessionNumber are matched through the salted hash stored with each image (the number itself is
    never stored); header values of the study (names, IDs, birth date, institution) are read from one of its source
    files and removed from the text, then the de-identification tool runs."""
    summary = ImportSummary()
    text, summary.not_utf8 = _decode(path)
    settings = collection.settings
    store = collection.catalog.reports
    known_by_study: dict[str, Identifiers | None] = {}
    for row_number, row in _rows(path, text):
        summary.rows += 1
        try:
            study, report_text, written = _fields(row)
            if study is None:
                study = _study_by_accession(collection, _get(row, ACCESSION_KEYS))
            if study not in known_by_study:
                known_by_study[study] = _study_headers(collection, study)
            known = known_by_study[study]
            report = prepare_report(
                report_text,
                study,
                origin="import",
                reference=f"{path.name}:{row_number}",
                written_at=written,
                known=known,
                max_chars=settings.report_max_chars,
            )
        except ReportInputError as exc:
            summary.rejected.append((row_number, str(exc)))
            continue
        if store.add([report]):
            summary.stored += 1
            summary.truncated += int(report.truncated)
            summary.waiting += int(store.study_source(study) is None)
        else:
            summary.duplicates += 1
    return summary


def _decode(path: Path) -> tuple[str, bool]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ReportInputError(f"cannot read {path}: {exc.strerror}") from exc
    if size > MAX_IMPORT_BYTES:
        raise ReportInputError(f"{path} is {size} bytes; split it into files under 2 GiB")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8: read as Windows-1252", path.name)
        return data.decode("cp1252", errors="replace"), True


def _rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, object]]]:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReportInputError(f"{path.name} line {number} is not JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise ReportInputError(f"{path.name} line {number} is not a JSON object")
            yield number, row
        return
    csv.field_size_limit(MAX_IMPORT_BYTES // 2)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise ReportInputError(
            f"{path.name} has no header row (expected study_instance_uid or accession_number, report)"
        )
    for number, row in enumerate(reader, 1):
        yield number, dict(row)


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace(" ", "").replace("-", "")


def _get(row: dict[str, object], names: tuple[str, ...]) -> str:
    for key, value in row.items():
        if isinstance(key, str) and _norm(key) in names and value is not None:
            return str(value).strip()
    return ""


def _fields(row: dict[str, object]) -> tuple[str | None, str, datetime | None]:
    study = _get(row, STUDY_KEYS) or None
    if study is None and not _get(row, ACCESSION_KEYS):
        raise ReportInputError("no study_instance_uid or accession_number")
    text = _get(row, TEXT_KEYS)
    if not text:
        raise ReportInputError("no report text")
    if study is not None and (len(study) > 64 or not all(c.isdigit() or c == "." for c in study)):
        raise ReportInputError("study_instance_uid is not a DICOM UID (digits and dots, at most 64)")
    raw = _get(row, DATE_KEYS)
    written = None
    if raw:
        try:
            written = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise ReportInputError("date is not an ISO date or date-time (YYYY-MM-DD[THH:MM:SS])") from exc
        if written.tzinfo is None:
            written = written.replace(tzinfo=UTC)
    return study, text, written


def _study_by_accession(collection: Collection, accession: str) -> str:
    hashed = hash_accession(accession, collection.salt)
    studies = collection.catalog.reports.studies_by_accession_hash(hashed) if hashed else []
    if not studies:
        raise ReportInputError("no indexed study has this accession number (index its images first)")
    if len(studies) > 1:
        raise ReportInputError(f"{len(studies)} indexed studies share this accession number: key the row by study UID")
    return studies[0]


def _study_headers(collection: Collection, study: str) -> Identifiers | None:
    """The header values of one of the study's indexed files (None: none indexed yet, or unreadable now)."""
    uri = collection.catalog.reports.study_source(study)
    if uri is None:
        return None
    try:
        return header_identifiers(read_dataset(read_source(uri, collection.settings), force=True))
    except (MedsearchError, OSError, ValueError) as exc:
        log.warning(
            "a study's headers could not be read again (%s): its report waits for new images", type(exc).__name__
        )
        return None
