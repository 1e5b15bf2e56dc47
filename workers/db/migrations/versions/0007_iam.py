"""IAM: users, groups, access keys, policies and their attachments, SWR grants, the audit trail.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from workers.db.types import BigIntId, UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _named_table(name: str) -> None:
    """A user or a group: a hex id, a unique name, a description."""
    op.create_table(
        name,
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        sa.UniqueConstraint("name", name=f"uq_{name}_name"),
    )


def _cascade_to(table: str, column: str, referred: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{referred}.id"], name=f"fk_{table}_{column}_{referred}", ondelete="CASCADE"
    )


def upgrade() -> None:
    _named_table("iam_users")
    _named_table("iam_groups")
    op.create_table(
        "iam_group_members",
        sa.Column("group_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="pk_iam_group_members"),
        _cascade_to("iam_group_members", "group_id", "iam_groups"),
        _cascade_to("iam_group_members", "user_id", "iam_users"),
    )
    op.create_index("ix_iam_group_members_user_id", "iam_group_members", ["user_id"])
    op.create_table(
        "iam_access_keys",
        sa.Column("access_key", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("access_key", name="pk_iam_access_keys"),
        _cascade_to("iam_access_keys", "user_id", "iam_users"),
    )
    op.create_index("ix_iam_access_keys_user_id", "iam_access_keys", ["user_id"])
    op.create_table(
        "iam_policies",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_iam_policies"),
        sa.UniqueConstraint("name", name="uq_iam_policies_name"),
    )
    op.create_table(
        "iam_attachments",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("principal_type", sa.String(8), nullable=False),
        sa.Column("principal_id", sa.String(64), nullable=False),
        sa.Column("policy_name", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_iam_attachments"),
        sa.UniqueConstraint(
            "principal_type",
            "principal_id",
            "policy_name",
            name="uq_iam_attachments_principal_type_principal_id_policy_name",
        ),
    )
    op.create_index("ix_iam_attachments_policy_name", "iam_attachments", ["policy_name"])
    op.create_table(
        "iam_grants",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("auth", sa.Integer(), nullable=False),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_iam_grants"),
        sa.UniqueConstraint("user_id", "namespace", "repository", name="uq_iam_grants_user_id_namespace_repository"),
        _cascade_to("iam_grants", "user_id", "iam_users"),
    )
    op.create_index("ix_iam_grants_target", "iam_grants", ["namespace", "repository"])
    op.create_table(
        "audit_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.String(512), nullable=False),
        sa.Column("path", sa.String(2048), nullable=False),
        sa.Column("principal", sa.String(255), nullable=False),
        sa.Column("principal_id", sa.String(64), nullable=False),
        sa.Column("access_key", sa.String(64), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(1024), nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("iam_grants")
    op.drop_table("iam_attachments")
    op.drop_table("iam_policies")
    op.drop_table("iam_access_keys")
    op.drop_table("iam_group_members")
    op.drop_table("iam_groups")
    op.drop_table("iam_users")
