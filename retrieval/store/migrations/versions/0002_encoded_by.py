"""Record which encoder back end and precision wrote each image's vector (images.encoded_by, e.g. "openvino-bf16").

Rows written before this revision keep NULL (shown as "unrecorded" by stats). Idempotent like 0001: a column
already there (a database created from the current models) is left as it is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_column() -> bool:
    return any(c["name"] == "encoded_by" for c in sa.inspect(op.get_bind()).get_columns("images"))


def upgrade() -> None:
    if not _has_column():
        with op.batch_alter_table("images") as batch:
            batch.add_column(sa.Column("encoded_by", sa.String(32), nullable=True))


def downgrade() -> None:
    if _has_column():
        with op.batch_alter_table("images") as batch:
            batch.drop_column("encoded_by")
