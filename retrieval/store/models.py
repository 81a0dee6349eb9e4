"""SQLAlchemy 2.0 typed models: images, their vectors, processed sources, failures, index info."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Date, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
    source_uri: Mapped[str] = mapped_column(Text, index=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    pixel_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # SHA-256 of the encoder input
    label: Mapped[str | None] = mapped_column(Text, index=True)
    report: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    encoded_by: Mapped[str | None] = mapped_column(String(32))  # back end + precision, e.g. "openvino-bf16"


class Vector(Base):
    """The embedding of an image: the source of truth the FAISS index is derived from."""

    __tablename__ = "vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Source(Base):
    """A file or archive member that was fully processed (so a re-run can skip it unopened)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))  # "indexed" | "failed"
    images: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
