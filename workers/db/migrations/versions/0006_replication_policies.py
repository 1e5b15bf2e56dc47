"""Replication policies (enterprise edition), their executions, registry ids; job operation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replication_jobs") as batch:
        batch.add_column(sa.Column("operation", sa.String(16), nullable=False, server_default="copy"))
        batch.add_column(sa.Column("policy_id", sa.BigInteger()))
    op.create_table(
        "replication_registries",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replication_registries"),
        sa.UniqueConstraint("region", name="uq_replication_registries_region"),
    )
    op.create_table(
        "replication_policies",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("src_registry_id", sa.BigInteger(), nullable=False),
        sa.Column("dest_registry_id", sa.BigInteger(), nullable=False),
        sa.Column("dest_namespace", sa.String(255), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("repo_scope_mode", sa.String(32), nullable=False),
        sa.Column("trigger_type", sa.String(16), nullable=False),
        sa.Column("cron", sa.String(128), nullable=False),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("replicate_deletion", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replication_policies"),
        sa.UniqueConstraint("name", name="uq_replication_policies_name"),
    )
    op.create_table(
        "replication_executions",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("enumerated", sa.Boolean(), nullable=False),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("status_text", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replication_executions"),
    )
    op.create_index("ix_replication_executions_policy", "replication_executions", ["policy_id", "created_at"])


def downgrade() -> None:
    op.drop_table("replication_executions")
    op.drop_table("replication_policies")
    op.drop_table("replication_registries")
    with op.batch_alter_table("replication_jobs") as batch:
        batch.drop_column("policy_id")
        batch.drop_column("operation")
