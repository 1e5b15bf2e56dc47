"""Schedule slots: one row per dispatched fire time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_slots",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("job", sa.String(100), nullable=False),
        sa.Column("slot_at", UtcDateTime(), nullable=False),
        sa.Column("dispatched_at", UtcDateTime(), nullable=False),
        sa.Column("completed_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_slots"),
    )


def downgrade() -> None:
    op.drop_table("schedule_slots")
