"""Zero-shot tags and few-shot probes: the tag vocabulary, probe versions and per-image scores of both.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tables() -> sa.MetaData:
    """The four tables as this revision made them (later model changes get their own revisions)."""
    meta = sa.MetaData()
    sa.Table(
        "tags",
        meta,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("threshold", sa.Double, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    images = sa.Table("images", meta, sa.Column("id", sa.Integer, primary_key=True))  # for the foreign keys only
    sa.Table(
        "tag_scores",
        meta,
        sa.Column("tag", sa.String(64), sa.ForeignKey("tags.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey(images.c.id, ondelete="CASCADE"), primary_key=True),
        sa.Column("score", sa.Double, nullable=False),
        sa.Index("ix_tag_scores_image_id", "image_id"),
        sa.Index("ix_tag_scores_tag_score", "tag", "score"),
    )
    sa.Table(
        "probes",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("positive", sa.String(200), nullable=False),
        sa.Column("coef", sa.LargeBinary, nullable=False),
        sa.Column("intercept", sa.Double, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("examples", sa.Text, nullable=False),
        sa.Column("applied", sa.DateTime(timezone=True)),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_probes_name_version"),
        sa.Index("ix_probes_name", "name"),
    )
    sa.Table(
        "probe_scores",
        meta,
        sa.Column("probe", sa.String(64), primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey(images.c.id, ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("probability", sa.Double, nullable=False),
        sa.Index("ix_probe_scores_image_id", "image_id"),
        sa.Index("ix_probe_scores_probe_probability", "probe", "probability"),
    )
    return meta


NEW = ("tags", "tag_scores", "probes", "probe_scores")


def upgrade() -> None:
    """Idempotent like the baseline: a database whose tables were made from the models (create_all) is completed,
    never recreated."""
    bind = op.get_bind()
    tables = _tables()
    for name in NEW:
        table = tables.tables[name]
        table.create(bind, checkfirst=True)
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    for table in reversed(NEW):
        op.drop_table(table)
