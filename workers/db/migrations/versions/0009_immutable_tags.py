"""Immutable tag rules of a namespace (SWR enterprise ``immutabletagrules``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "immutable_rules",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("tag_selectors", sa.JSON(), nullable=False),
        sa.Column("scope_selectors", sa.JSON(), nullable=False),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_immutable_rules"),
    )
    op.create_index("ix_immutable_rules_namespace", "immutable_rules", ["namespace"])


def downgrade() -> None:
    op.drop_table("immutable_rules")
