"""Indexed images found by their content: the encoder input's hash per image, and indexes for the lookup.

An upload whose preprocessed pixels equal an indexed image's (same file, or the same instance in another
transfer syntax that decodes to the same pixels) reuses that image's stored vector instead of running the
model. `pixel_hash` is empty for images indexed before this revision; those are still found by the file's
content hash, frame and window.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("pixel_hash", sa.String(64), nullable=True))
    op.create_index("ix_images_pixel_hash", "images", ["pixel_hash"])
    op.create_index("ix_images_content_hash", "images", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_images_content_hash", table_name="images")
    op.drop_index("ix_images_pixel_hash", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("pixel_hash")
