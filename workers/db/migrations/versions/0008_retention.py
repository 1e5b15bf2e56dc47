"""Retention: policies, runs with their plans, deletion logs, the soft-delete trash.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("edition", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255)),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_policies"),
    )
    op.create_index("ix_retention_policies_scope", "retention_policies", ["namespace", "repository"])
    op.create_table(
        "retention_runs",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_retention_runs"),
        sa.UniqueConstraint("key", name="uq_retention_runs_key"),
    )
    op.create_index("ix_retention_runs_policy", "retention_runs", ["policy_id", "created_at"])
    op.create_table(
        "retention_logs",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("retention_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repo", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("rule_type", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_logs"),
    )
    op.create_index("ix_retention_logs_repository", "retention_logs", ["namespace", "repo", "created_at"])
    op.create_table(
        "retention_trash",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(160), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("deleted_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("restored_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_retention_trash"),
    )
    op.create_index("ix_retention_trash_repository", "retention_trash", ["namespace", "repository", "digest"])


def downgrade() -> None:
    op.drop_table("retention_trash")
    op.drop_table("retention_logs")
    op.drop_table("retention_runs")
    op.drop_table("retention_policies")
