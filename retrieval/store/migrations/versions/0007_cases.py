"""Series and study vectors: the `cases` table, filled from the stored slice vectors (no image is re-encoded).

A series' vector is the normalised mean of its indexed slices' vectors, a study's the normalised mean of its
series' vectors (retrieval/store/cases.py). The case indexes (series.faiss, study.faiss) are derived from this table
when a collection opens, as the image index is from `vectors`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from retrieval.store.cases import refresh_cases

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Idempotent like the others: a database made from the current models (create_all) has the table already.
def upgrade() -> None:
    bind = op.get_bind()
    if "cases" not in sa.inspect(bind).get_table_names():
        op.create_table(
            "cases",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("level", sa.String(8), nullable=False),
            sa.Column("uid", sa.String(64), nullable=False),
            sa.Column("study_uid", sa.String(64), nullable=True),
            sa.Column("images", sa.Integer(), nullable=False),
            sa.Column("series", sa.Integer(), nullable=False),
            sa.Column("vector", sa.LargeBinary(), nullable=False),
            sa.Column("revision", sa.Integer(), nullable=False),
            sa.UniqueConstraint("level", "uid", name="uq_cases_level_uid"),
            sqlite_autoincrement=True,
        )
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("cases")}
    for column in ("study_uid", "revision"):  # each on its own: a run killed between them left the first
        if f"ix_cases_{column}" not in indexes:
            op.create_index(f"ix_cases_{column}", "cases", [column])
    refresh_cases(Session(bind=bind), None)  # every series and study of the images already indexed


def downgrade() -> None:
    if "cases" in sa.inspect(op.get_bind()).get_table_names():
        op.drop_table("cases")
