"""The digest index leads with the digest, so the planner cannot mistake it for the unique key.

Both ``ix_artifacts_digest`` (region, name, digest) and the unique key (region, name, ref) began
with (region, name). Looking rows up by (region, name, ref), as the pull recorder does, the
planner sometimes chose the digest index, matched (region, name) in it and filtered ``ref``
row by row: every tag and blob of the repository read for each key (measured: 38 buffers per
pulled artifact instead of 7, a third of a batch's database time). With the digest first, the
index serves only digest lookups (where the digest is the selective part anyway).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_artifacts_digest", "artifacts")
    op.create_index("ix_artifacts_digest", "artifacts", ["digest", "region", "name"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_digest", "artifacts")
    op.create_index("ix_artifacts_digest", "artifacts", ["region", "name", "digest"])
