"""Reports: a `reports` table (de-identified text of a study, all versions kept, the latest marked), its full-text
index (SQLite FTS5 external-content table + triggers; PostgreSQL GIN on to_tsvector('simple', affirmed)), and
`images.accession_hash` (AccessionNumber salted like PatientID, so imports keyed by it match without storing it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from retrieval.store.report_search import POSTGRES_DDL, SQLITE_DDL

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _reports() -> sa.Table:
    """The table as this revision made it (later model changes get their own revisions)."""
    meta = sa.MetaData()
    return sa.Table(
        "reports",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200)),
        sa.Column("written_at", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("affirmed", sa.Text, nullable=False),
        sa.Column("negated", sa.Text, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("chars", sa.Integer, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("redactions", sa.Integer, nullable=False),
        sa.Column("headers_known", sa.Boolean, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.UniqueConstraint("study_instance_uid", "text_hash", name="uq_reports_study_text"),
        sa.Index("ix_reports_study_instance_uid", "study_instance_uid"),
        sa.Index("ix_reports_latest", "latest"),
        sqlite_autoincrement=True,
    )


def upgrade() -> None:
    """Idempotent like the baseline: what a create_all from the models already made is completed, not recreated."""
    bind = op.get_bind()
    table = _reports()
    table.create(bind, checkfirst=True)
    for index in table.indexes:
        index.create(bind, checkfirst=True)
    columns = {column["name"] for column in sa.inspect(bind).get_columns("images")}
    if "accession_hash" not in columns:
        op.add_column("images", sa.Column("accession_hash", sa.String(64)))
    op.create_index("ix_images_accession_hash", "images", ["accession_hash"], if_not_exists=True)
    for statement in POSTGRES_DDL if bind.dialect.name == "postgresql" else SQLITE_DDL:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS reports_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS reports_fts")
    op.drop_index("ix_images_accession_hash", "images")
    op.drop_column("images", "accession_hash")
    op.drop_table("reports")
