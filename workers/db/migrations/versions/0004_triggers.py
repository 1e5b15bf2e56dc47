"""Triggers: namespaces, deployment triggers, webhook policies and their deliveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "namespaces",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_namespaces"),
        sa.UniqueConstraint("name", name="uq_namespaces_name"),
    )
    op.create_table(
        "deployment_triggers",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("app_type", sa.String(32), nullable=False),
        sa.Column("application", sa.String(253), nullable=False),
        sa.Column("cluster_id", sa.String(128), nullable=False),
        sa.Column("cluster_name", sa.String(128), nullable=False),
        sa.Column("cluster_ns", sa.String(253), nullable=False),
        sa.Column("condition", sa.String(1024), nullable=False),
        sa.Column("container", sa.String(253), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger_mode", sa.String(16), nullable=False),
        sa.Column("trigger_type", sa.String(16), nullable=False),
        sa.Column("verify_rollout", sa.Boolean()),
        sa.Column("rollout_timeout_s", sa.Float()),
        sa.Column("creator_name", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_triggers"),
        sa.UniqueConstraint("namespace", "repository", "name", name="uq_deployment_triggers_namespace_repository_name"),
    )
    op.create_table(
        "webhook_policies",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("scope_rules", sa.JSON(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("signing_secrets", sa.Text(), nullable=False),
        sa.Column("retry_schedule_s", sa.JSON()),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_policies"),
        sa.UniqueConstraint("namespace", "name", name="uq_webhook_policies_namespace_name"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("trigger_id", sa.BigInteger()),
        sa.Column("policy_id", sa.BigInteger()),
        sa.Column("target_index", sa.Integer()),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("event_id", sa.String(300), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128)),
        sa.Column("digest", sa.String(160)),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("lease_until", UtcDateTime()),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("rolled_back_to", sa.String(1024)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("key", name="uq_deliveries_key"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_trigger", "deliveries", ["trigger_id", "created_at"])
    op.create_index("ix_deliveries_policy", "deliveries", ["policy_id", "created_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("webhook_policies")
    op.drop_table("deployment_triggers")
    op.drop_table("namespaces")
