"""Baseline: the schema medsearch 0.1 created with create_all (images, vectors, sources, failures, index_info).

Written to be idempotent: a data folder made by the old create_all code (tables there, no alembic_version),
or one whose first open was killed between CREATE TABLE and CREATE INDEX, is completed, never recreated.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tables() -> sa.MetaData:
    """The 0.1 schema, frozen here (later model changes get their own revisions)."""
    meta = sa.MetaData()
    sa.Table(
        "images",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), index=True),
        sa.Column("sop_class_uid", sa.String(64)),
        sa.Column("study_instance_uid", sa.String(64), index=True),
        sa.Column("series_instance_uid", sa.String(64), index=True),
        sa.Column("frame", sa.Integer, nullable=False),
        sa.Column("number_of_frames", sa.Integer, nullable=False),
        sa.Column("modality", sa.String(16), index=True),
        sa.Column("body_part", sa.String(64), index=True),
        sa.Column("view_position", sa.String(32)),
        sa.Column("study_date", sa.Date, index=True),
        sa.Column("sex", sa.String(16)),
        sa.Column("age", sa.String(16)),
        sa.Column("manufacturer", sa.String(128)),
        sa.Column("rows", sa.Integer),
        sa.Column("columns", sa.Integer),
        sa.Column("photometric", sa.String(32)),
        sa.Column("transfer_syntax", sa.String(64)),
        sa.Column("window", sa.String(32)),
        sa.Column("patient_hash", sa.String(64), index=True),
        sa.Column("source_uri", sa.Text, nullable=False, index=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.Text, index=True),
        sa.Column("report", sa.Text),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "vectors",
        meta,
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    sa.Table(
        "sources",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uri", sa.Text, nullable=False, unique=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime", sa.Double, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("images", sa.Integer, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "failures",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_uri", sa.Text, nullable=False, unique=True),
        sa.Column("code", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "index_info",
        meta,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    return meta


def upgrade() -> None:
    bind = op.get_bind()
    for table in _tables().sorted_tables:
        table.create(bind, checkfirst=True)
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    _tables().drop_all(bind)
