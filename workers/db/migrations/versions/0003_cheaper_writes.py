"""Cheaper writes on Postgres: HOT updates of artifacts, a BRIN index on history time.

Most updates of an artifact row change only ``pulled_at``, ``event_at`` and ``updated_at``,
which no index covers. With free space on the page Postgres rewrites the row in place instead
of adding an entry to all four indexes. History rows arrive in ``recorded_at`` order, so a
BRIN index serves the sweep's range delete at a fraction of a B-tree's cost per insert.
Postgres only; SQLite has neither.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE artifacts SET (fillfactor = 70)")
        op.drop_index("ix_image_events_recorded_at", "image_events")
        op.create_index("ix_image_events_recorded_at", "image_events", ["recorded_at"], postgresql_using="brin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE artifacts RESET (fillfactor)")
        op.drop_index("ix_image_events_recorded_at", "image_events")
        op.create_index("ix_image_events_recorded_at", "image_events", ["recorded_at"])
