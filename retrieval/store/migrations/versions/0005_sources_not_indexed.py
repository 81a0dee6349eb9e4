"""Why a processed source holds no image: the SOP class of a skipped non-image object, the source a copy repeats.

`sources.status` gains "skipped" (structured reports, RT plans, ECGs, DICOMDIRs...: not failures), named by
`sources.sop_class`; an indexed source whose every instance was already indexed elsewhere names that source in
`sources.duplicate_of` (`medsearch dropped` lists both). Rows processed before this revision keep NULL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("sop_class", sa.String(128)), ("duplicate_of", sa.Text()))


def _existing() -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns("sources")}


# Idempotent like the others: a database made from the current models (create_all) has the columns already.
def upgrade() -> None:
    existing = _existing()
    for name, kind in COLUMNS:
        if name not in existing:
            op.add_column("sources", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    existing = _existing()
    for name, _ in reversed(COLUMNS):
        if name not in existing:
            continue
        if op.get_bind().dialect.name == "sqlite":  # SQLite >= 3.35 drops a column in place
            op.execute(f"ALTER TABLE sources DROP COLUMN {name}")
        else:
            op.drop_column("sources", name)
