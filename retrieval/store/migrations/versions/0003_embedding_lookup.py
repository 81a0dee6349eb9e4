"""Indexed images found by their content: the encoder input's hash per image, and indexes for the lookup.

An upload whose preprocessed pixels equal an indexed image's (same file, or the same instance in another
transfer syntax that decodes to the same pixels) reuses that image's stored vector instead of running the
model. `pixel_hash` is empty for images indexed before this revision; those are still found by the file's
content hash, frame and window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Idempotent like the baseline (a database adopted from create_all may have all of it already). No batch mode
# (copy, drop, rename) on SQLite: dropping the old images table would cascade into vectors.
def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "pixel_hash" not in {column["name"] for column in inspector.get_columns("images")}:
        op.add_column("images", sa.Column("pixel_hash", sa.String(64), nullable=True))
    indexes = {index["name"] for index in inspector.get_indexes("images")}
    for name, column in (("ix_images_pixel_hash", "pixel_hash"), ("ix_images_content_hash", "content_hash")):
        if name not in indexes:
            op.create_index(name, "images", [column])


def downgrade() -> None:
    op.drop_index("ix_images_content_hash", table_name="images")
    op.drop_index("ix_images_pixel_hash", table_name="images")
    if op.get_bind().dialect.name == "sqlite":  # SQLite >= 3.35 drops a column in place
        op.execute("ALTER TABLE images DROP COLUMN pixel_hash")
    else:
        op.drop_column("images", "pixel_hash")
