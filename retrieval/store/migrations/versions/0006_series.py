"""Series planning: the `series` table (each series' plan), images' position along their volume's normal, and
which series a processed source belongs to (with the reason when it was excluded from the volume).

`sources.status` gains "sampled_out" (a volume slice not among the K sampled) and "excluded" (a localizer,
another orientation or size: `sources.reason`). Rows from before this revision keep NULL: they were indexed
slice by slice, as every slice was then.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("images", "slice_position", sa.Double()),
    ("sources", "series_instance_uid", sa.String(64)),
    ("sources", "reason", sa.Text()),
)
SOURCE_SERIES_INDEX = "ix_sources_series_instance_uid"


def _series_table() -> sa.Table:
    """The table as this revision made it (later model changes get their own revisions)."""
    return sa.Table(
        "series",
        sa.MetaData(),
        sa.Column("series_instance_uid", sa.String(64), primary_key=True),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("modality", sa.String(16)),
        sa.Column("series_description", sa.String(128)),
        sa.Column("study_description", sa.String(128)),
        sa.Column("slices_total", sa.Integer, nullable=False),
        sa.Column("slices_sampled", sa.Integer, nullable=False),
        sa.Column("requested", sa.Integer),
        sa.Column("excluded", sa.Integer, nullable=False),
        sa.Column("excluded_reasons", sa.Text, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_series_study_instance_uid", "study_instance_uid"),
    )


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


# Idempotent like the others: a database made from the current models (create_all) has all of it already.
def upgrade() -> None:
    bind = op.get_bind()
    table = _series_table()
    table.create(bind, checkfirst=True)
    for index in table.indexes:
        index.create(bind, checkfirst=True)
    for name, column, kind in COLUMNS:
        if column not in _columns(name):
            op.add_column(name, sa.Column(column, kind, nullable=True))
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("sources")}
    if SOURCE_SERIES_INDEX not in indexes:
        op.create_index(SOURCE_SERIES_INDEX, "sources", ["series_instance_uid"])


def downgrade() -> None:
    bind = op.get_bind()
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("sources")}
    if SOURCE_SERIES_INDEX in indexes:
        op.drop_index(SOURCE_SERIES_INDEX, "sources")
    for name, column, _ in reversed(COLUMNS):
        if column not in _columns(name):
            continue
        if bind.dialect.name == "sqlite":  # SQLite >= 3.35 drops a column in place
            op.execute(f"ALTER TABLE {name} DROP COLUMN {column}")
        else:
            op.drop_column(name, column)
    op.drop_table("series")
