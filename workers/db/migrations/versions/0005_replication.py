"""Replication: automatic sync rules, copy jobs, chunked-upload checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_rules",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("remote_region", sa.String(64), nullable=False),
        sa.Column("remote_namespace", sa.String(255), nullable=False),
        sa.Column("sync_auto", sa.Boolean(), nullable=False),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_rules"),
        sa.UniqueConstraint(
            "namespace", "repository", "remote_region", "remote_namespace", name="uq_sync_rules_target"
        ),
    )
    op.create_table(
        "replication_jobs",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.BigInteger()),
        sa.Column("execution_id", sa.BigInteger()),
        sa.Column("source_region", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(160)),
        sa.Column("remote_region", sa.String(64), nullable=False),
        sa.Column("remote_namespace", sa.String(255), nullable=False),
        sa.Column("override", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("lease_until", UtcDateTime()),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("blobs_copied", sa.Integer(), nullable=False),
        sa.Column("blobs_skipped", sa.Integer(), nullable=False),
        sa.Column("blobs_mounted", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("operator_id", sa.String(255), nullable=False),
        sa.Column("operator_name", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("finished_at", UtcDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_replication_jobs"),
        sa.UniqueConstraint("key", name="uq_replication_jobs_key"),
    )
    op.create_index("ix_replication_jobs_due", "replication_jobs", ["status", "next_attempt_at"])
    op.create_index("ix_replication_jobs_repository", "replication_jobs", ["namespace", "repository", "created_at"])
    op.create_index("ix_replication_jobs_execution", "replication_jobs", ["execution_id"])
    op.create_table(
        "upload_checkpoints",
        sa.Column("key", sa.String(600), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_upload_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("upload_checkpoints")
    op.drop_table("replication_jobs")
    op.drop_table("sync_rules")
