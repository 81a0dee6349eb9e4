"""DICOM Structured Reports as text (headings kept, identifiers left out), and the identifying values a header names.

highdicom's typed reader (`ContentSequence.from_sequence`) refuses documents that DCMTK reads, pydicom's own
Comprehensive SR test file among them ("lacks required attribute Concept Name Content Sequence" on an unnamed
nested container), so the content tree is read here item by item, by value type, with pydicom; nothing of it is
kept that could name a person: PNAME, DATE/TIME, UIDREF and observation-context items are dropped."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pydicom
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from retrieval.errors import ReportInputError

MAX_DEPTH = 32  # a content tree deeper than this is malformed (or hostile); its deeper items are ignored
# header attributes that identify a person or a place: removed from the report text wherever they appear
NAME_TAGS = (
    "PatientName",
    "ReferringPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "OperatorsName",
    "RequestingPhysician",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ResponsiblePerson",
    "VerifyingObserverName",
    "PersonName",
)
ID_TAGS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "IssuerOfPatientID", "AdmissionID", "StudyID")
PLACE_TAGS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "StationName",
    "VerifyingOrganization",
)
DATE_TAGS = ("PatientBirthDate",)
SEQUENCES = ("VerifyingObserverSequence", "OtherPatientIDsSequence", "ReferringPhysicianIdentificationSequence")
SKIPPED_TYPES = {"PNAME", "DATE", "TIME", "DATETIME", "UIDREF", "IMAGE", "COMPOSITE", "WAVEFORM"}
SKIPPED_TYPES |= {"SCOORD", "SCOORD3D", "TCOORD"}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


@dataclass
class Identifiers:
    """Values a study's headers name (never stored): each kind is replaced by its own placeholder in report text."""

    names: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    places: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)

    def update(self, other: Identifiers) -> None:
        """Add another header's values."""
        self.names |= other.names
        self.ids |= other.ids
        self.places |= other.places
        self.dates |= other.dates

    def __repr__(self) -> str:  # never print the values
        return f"Identifiers({len(self.names)} names, {len(self.ids)} ids, {len(self.places)} places)"


@dataclass
class SrDocument:
    """A structured report read from DICOM: its study, its own SOP instance, when it was written, its text."""

    study_instance_uid: str
    sop_instance_uid: str | None
    written_at: datetime | None
    text: str = field(repr=False)  # not yet de-identified: never printed or logged
    identifiers: Identifiers = field(repr=False)


def read_sr(data: bytes) -> SrDocument:
    """Parse a DICOM SR document; a ReportInputError says what is missing (study UID, content)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise ReportInputError(f"the structured report could not be parsed: {type(exc).__name__}: {exc}") from exc
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not study:
        raise ReportInputError("the structured report has no StudyInstanceUID: it cannot be given to a study")
    try:
        body: list[str] = []
        _walk(ds.get("ContentSequence", []), 1, body)
    except Exception as exc:  # a malformed content tree
        raise ReportInputError(f"the structured report's content could not be read: {type(exc).__name__}") from exc
    text = "\n".join([_meaning(ds), *body]).strip()
    if not any(line.strip() for line in body):
        raise ReportInputError("the structured report holds no text (no TEXT, CODE or NUM content items)")
    identifiers = header_identifiers(ds)
    identifiers.update(_tree_names(ds))
    sop = str(ds.get("SOPInstanceUID", "") or "").strip() or None
    return SrDocument(study, sop, _written_at(ds), text, identifiers)


def sr_text(ds: Dataset) -> str:
    """The report's text: the document title, then each container's heading and its items, indented by depth."""
    lines: list[str] = []
    title = _meaning(ds)
    if title:
        lines.append(title)
    _walk(ds.get("ContentSequence", []), 1, lines)
    return "\n".join(lines)


def _walk(items: Iterable[Dataset], depth: int, lines: list[str]) -> None:
    if depth > MAX_DEPTH:
        return
    for item in items:
        value_type = str(item.get("ValueType", "") or "").upper()
        relation = str(item.get("RelationshipType", "") or "").upper()
        if relation == "HAS OBS CONTEXT" or value_type in SKIPPED_TYPES:
            continue  # observer names, organisations, dates, references: nothing a reader needs, maybe identifying
        name = _meaning(item)
        line = _line(item, value_type, name)
        indent = "  " * (depth - 1)
        if line:
            lines.append(indent + line)
        _walk(item.get("ContentSequence", []), depth + 1, lines)


def _line(item: Dataset, value_type: str, name: str) -> str:
    if value_type == "CONTAINER":
        return name
    if value_type == "TEXT":
        value = str(item.get("TextValue", "") or "").strip()
        return " ".join(value.split()) if value else ""
    if value_type == "CODE":
        codes = item.get("ConceptCodeSequence") or []
        value = str(codes[0].get("CodeMeaning", "") or "") if codes else ""
        return f"{name}: {value}" if name and value else value
    if value_type == "NUM":
        measured = item.get("MeasuredValueSequence") or []
        if not measured:
            return ""
        number = str(measured[0].get("NumericValue", "") or "").strip()
        units = measured[0].get("MeasurementUnitsCodeSequence") or []
        unit = str(units[0].get("CodeValue", "") or "") if units else ""
        value = f"{number} {unit}".strip()
        return f"{name}: {value}" if name and number else ""
    return ""


def _meaning(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeMeaning", "") or "").strip() if names else ""


def _written_at(ds: Dataset) -> datetime | None:
    day = str(ds.get("ContentDate", "") or ds.get("StudyDate", "") or "").strip()
    clock = (str(ds.get("ContentTime", "") or "").strip().split(".")[0] + "000000")[:6]
    try:
        return datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def header_identifiers(ds: Dataset) -> Identifiers:
    """The identifying values a dataset's header names (its sequences of observers included)."""
    found = Identifiers()
    datasets = [ds]
    for sequence in SEQUENCES:
        datasets.extend(ds.get(sequence, None) or [])
    for item in datasets:
        for tag in NAME_TAGS:
            for value in _values(item, tag):
                found.names |= name_parts(value)
        for tag in ID_TAGS:
            found.ids |= {v for v in _values(item, tag) if len(v) >= 3}
        for tag in PLACE_TAGS:
            found.places |= {v for v in _values(item, tag) if len(v) >= 3}
        for tag in DATE_TAGS:
            for value in _values(item, tag):
                found.dates |= date_forms(value)
    return found


def _tree_names(ds: Dataset) -> Identifiers:
    """Person names in the content tree (PNAME items: observers, authors)."""
    found = Identifiers()
    stack = list(ds.get("ContentSequence", []))
    seen = 0
    while stack and seen < 100_000:
        item = stack.pop()
        seen += 1
        if str(item.get("ValueType", "")).upper() == "PNAME":
            for value in _values(item, "PersonName"):
                found.names |= name_parts(value)
        stack.extend(item.get("ContentSequence", []))
    return found


def _values(ds: Dataset, keyword: str) -> list[str]:
    try:
        value = ds.get(keyword, None)
    except Exception:  # a malformed element
        return []
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def name_parts(value: str) -> set[str]:
    """A person name as it may appear in text: the whole name in both orders, and each part of 2+ letters."""
    person = PersonName(value)
    parts = [p.strip() for p in (person.family_name, person.given_name, person.middle_name) if p and p.strip()]
    words = {w for p in parts for w in p.replace(",", " ").split() if len(w.strip(".")) >= 2}
    out = set(words)
    if parts:
        out.add(" ".join(parts))
        out.add(" ".join(reversed(parts)))
    return out


def date_forms(value: str) -> set[str]:
    """A DICOM date (YYYYMMDD) as it may be written in text: ISO, US and European numeric, and with the month name."""
    try:
        day = datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return {value} if len(value) >= 6 else set()
    return _forms(day)


def _forms(day: date) -> set[str]:
    month = MONTHS[day.month - 1]
    d, m, y = day.day, day.month, day.year
    return {
        f"{y:04d}{m:02d}{d:02d}",
        f"{y:04d}-{m:02d}-{d:02d}",
        f"{m:02d}/{d:02d}/{y:04d}",
        f"{m}/{d}/{y:04d}",
        f"{d:02d}/{m:02d}/{y:04d}",
        f"{d:02d}.{m:02d}.{y:04d}",
        f"{d}.{m}.{y:04d}",
        f"{month} {d}, {y}",
        f"{month} {d} {y}",
        f"{d} {month} {y}",
        f"{month[:3]} {d}, {y}",
        f"{d} {month[:3]} {y}",
    }
