"""SQLAlchemy 2.0 typed models: images, vectors, cases, sources, failures, index info, tags, probes, reports."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

IMAGE_ID_MAX = 2**63 - 1  # image ids are positive int64 in every store and index


def is_image_id(value: int) -> bool:
    """Whether an image could have this id: positive int64 (anything else cannot exist, and would overflow the
    database driver). The one id check: the API's edge, the store's lookups and the vector reads use it."""
    return 1 <= value <= IMAGE_ID_MAX


def utcnow() -> datetime:
    """Timezone-aware now (stored as UTC)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base for all medsearch tables."""


class Image(Base):
    """One indexed image (a DICOM frame or a raster file). No patient name; PatientID only as HMAC."""

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012  # never reuse ids of removed images

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    frame: Mapped[int] = mapped_column(Integer, default=1)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    body_part: Mapped[str | None] = mapped_column(String(64), index=True)
    view_position: Mapped[str | None] = mapped_column(String(32))
    study_date: Mapped[date | None] = mapped_column(Date, index=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    age: Mapped[str | None] = mapped_column(String(16))
    manufacturer: Mapped[str | None] = mapped_column(String(128))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    photometric: Mapped[str | None] = mapped_column(String(32))
    transfer_syntax: Mapped[str | None] = mapped_column(String(64))
    window: Mapped[str | None] = mapped_column(String(32))
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    accession_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # AccessionNumber, salted like the ID
    source_uri: Mapped[str] = mapped_column(Text, index=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    pixel_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # SHA-256 of the encoder input
    label: Mapped[str | None] = mapped_column(Text, index=True)
    report: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    encoded_by: Mapped[str | None] = mapped_column(String(32))  # back end + precision, e.g. "openvino-bf16"
    slice_position: Mapped[float | None] = mapped_column(Double)  # mm along its volume's normal; NULL: single image


class Vector(Base):
    """The embedding of an image: the source of truth the FAISS index is derived from."""

    __tablename__ = "vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Case(Base):
    """A series or a study with its vector: derived data (like the FAISS index), recomputed from the stored slice
    vectors whenever a member changes. A series vector is the normalised mean of its indexed slices' vectors; a
    study vector the normalised mean of its series vectors, each series counting once (docs/search.md says why).
    The id is stable per (level, uid): the case indexes are keyed by it; `revision` grows with every change."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("level", "uid", name="uq_cases_level_uid"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    level: Mapped[str] = mapped_column(String(8))  # "series" | "study"
    uid: Mapped[str] = mapped_column(String(64))  # SeriesInstanceUID or StudyInstanceUID
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True)  # a series' study (a study: its own)
    images: Mapped[int] = mapped_column(Integer)  # indexed slices the vector was made from
    series: Mapped[int] = mapped_column(Integer, default=1)  # series the vector was made from (1 for a series)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # unit float32
    revision: Mapped[int] = mapped_column(Integer, index=True)


class Source(Base):
    """A file or archive member that was fully processed (so a re-run can skip it unopened)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column()
    # "indexed" | "failed" | "skipped" (a non-image object) | "sampled_out" (a volume slice not among the K sampled)
    # | "excluded" (not part of its series' volume: a localizer, another orientation or size; `reason` says which)
    status: Mapped[str] = mapped_column(String(16))
    images: Mapped[int] = mapped_column(Integer, default=0)
    sop_class: Mapped[str | None] = mapped_column(String(128))  # skipped: the object's SOP class name
    duplicate_of: Mapped[str | None] = mapped_column(Text)  # indexed with 0 images: the source it repeats
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)  # planned with its series
    reason: Mapped[str | None] = mapped_column(Text)  # excluded: why it is not part of its series' volume
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Series(Base):
    """A series as it was planned: its volume's size, the K slices sampled from it, what was left out and why.

    Choosing another K re-plans the series from this row and its sources (docs/cases.md)."""

    __tablename__ = "series"

    series_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(128))
    study_description: Mapped[str | None] = mapped_column(String(128))
    slices_total: Mapped[int] = mapped_column(Integer, default=0)  # slices in the volume (0: single images)
    slices_sampled: Mapped[int] = mapped_column(Integer, default=0)
    requested: Mapped[int | None] = mapped_column(Integer)  # the K asked for; NULL: all
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    excluded_reasons: Mapped[str] = mapped_column(Text, default="{}")  # JSON {reason: count}
    notes: Mapped[str] = mapped_column(Text, default="[]")  # JSON list: gaps, fallbacks, single-image decisions
    planned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Failure(Base):
    """A source that could not be indexed, with a machine code and a human reason."""

    __tablename__ = "failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_uri: Mapped[str] = mapped_column(Text, unique=True)
    code: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexInfo(Base):
    """Key/value facts about the collection: model fingerprint, preprocessing version, width, schema."""

    __tablename__ = "index_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Tag(Base):
    """A zero-shot tag: a prompt, its text embedding and the calibrated probability at which an image has it."""

    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    threshold: Mapped[float] = mapped_column(Double)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # the prompt's unit text vector (float32)
    fingerprint: Mapped[str] = mapped_column(String(128))  # the model key the vector was made with
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TagScore(Base):
    """An image's calibrated probability for a tag; (tag, score) is indexed so `--tag` is an SQL range filter."""

    __tablename__ = "tag_scores"
    __table_args__ = (Index("ix_tag_scores_tag_score", "tag", "score"),)

    tag: Mapped[str] = mapped_column(ForeignKey("tags.name", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Double)


class Probe(Base):
    """One version of a few-shot classifier: a logistic regression on the stored vectors of one model."""

    __tablename__ = "probes"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_probes_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(128))
    positive: Mapped[str] = mapped_column(String(200))  # what class 1 means (a label, or "1")
    coef: Mapped[bytes] = mapped_column(LargeBinary)  # float64, the vector width
    intercept: Mapped[float] = mapped_column(Double)
    metrics: Mapped[str] = mapped_column(Text)  # JSON: cross-validated AUC, accuracy, class counts, folds
    examples: Mapped[str] = mapped_column(Text)  # JSON: the training image ids (left out of `probe rank`)
    applied: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # when its scores were written
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProbeScore(Base):
    """An image's probability under the applied version of a probe; (probe, probability) is indexed for filters."""

    __tablename__ = "probe_scores"
    __table_args__ = (Index("ix_probe_scores_probe_probability", "probe", "probability"),)

    probe: Mapped[str] = mapped_column(String(64), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True)
    version: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Double)


class Report(Base):
    """A de-identified report of a study (a DICOM SR or an imported row): the scrubbed text only, never the original.

    A study may have several (amendments): all are kept, the `latest` one is what words match and hits show.
    `affirmed` is the text less the negated phrases ("no pneumothorax"): the full-text index is built on it."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", "text_hash", name="uq_reports_study_text"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(16))  # "sr" | "import"
    reference: Mapped[str | None] = mapped_column(String(200))  # the SR's SOP Instance UID, or "file.csv:row"
    written_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the report's own date and time
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    text: Mapped[str] = mapped_column(Text)  # scrubbed, headings kept
    affirmed: Mapped[str] = mapped_column(Text)  # scrubbed, negated phrases left out: what the words match
    negated: Mapped[str] = mapped_column(Text)  # the negated phrases, one per line
    text_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of `text`: the same report twice is stored once
    chars: Mapped[int] = mapped_column(Integer)  # length of the text as received (before the cap)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    redactions: Mapped[int] = mapped_column(Integer, default=0)  # spans the de-identification replaced
    headers_known: Mapped[bool] = mapped_column(Boolean, default=False)  # scrubbed of the study's header values
    latest: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
