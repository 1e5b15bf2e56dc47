"""Inventory: artifacts and the image event history.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("ref", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tag", sa.String(128)),
        sa.Column("digest", sa.String(160)),
        sa.Column("media_type", sa.String(255)),
        sa.Column("size", sa.BigInteger()),
        sa.Column("pushed_at", UtcDateTime()),
        sa.Column("pulled_at", UtcDateTime()),
        sa.Column("deleted_at", UtcDateTime()),
        sa.Column("event_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("region", "name", "ref", name="uq_artifacts_region_name_ref"),
    )
    op.create_index("ix_artifacts_listing", "artifacts", ["region", "namespace", "repository", "kind"])
    op.create_index("ix_artifacts_digest", "artifacts", ["region", "name", "digest"])
    op.create_table(
        "image_events",
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128)),
        sa.Column("digest", sa.String(160)),
        sa.Column("actor", sa.String(255)),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_image_events"),
    )
    op.create_index("ix_image_events_recorded_at", "image_events", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("image_events")
    op.drop_table("artifacts")
