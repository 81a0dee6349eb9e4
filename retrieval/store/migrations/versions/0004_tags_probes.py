"""Zero-shot tags and few-shot probes: the tag vocabulary, probe versions and per-image scores of both.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("threshold", sa.Double, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tag_scores",
        sa.Column("tag", sa.String(64), sa.ForeignKey("tags.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("score", sa.Double, nullable=False),
    )
    op.create_index("ix_tag_scores_image_id", "tag_scores", ["image_id"])
    op.create_index("ix_tag_scores_tag_score", "tag_scores", ["tag", "score"])
    op.create_table(
        "probes",
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
    )
    op.create_index("ix_probes_name", "probes", ["name"])
    op.create_table(
        "probe_scores",
        sa.Column("probe", sa.String(64), primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("probability", sa.Double, nullable=False),
    )
    op.create_index("ix_probe_scores_image_id", "probe_scores", ["image_id"])
    op.create_index("ix_probe_scores_probe_probability", "probe_scores", ["probe", "probability"])


def downgrade() -> None:
    for table in ("probe_scores", "probes", "tag_scores", "tags"):
        op.drop_table(table)
