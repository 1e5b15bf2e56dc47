"""The listing and digest indexes hold tag rows only.

Only tags are listed by (namespace, repository) or looked up by digest (a digest delete marks
the tags on it); blob and manifest digest rows, most of the table, are found by the unique
key. As partial indexes (``WHERE tag IS NOT NULL``) they cost a new blob or manifest row two
index entries instead of four (measured on a batch of 495 events: artifact upserts 10.2 →
7.0 ms of server time). The listing index no longer needs ``kind``: every entry is a tag.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TAG_ROWS = sa.text("tag IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_artifacts_listing", "artifacts")
    op.drop_index("ix_artifacts_digest", "artifacts")
    for name, columns in (("ix_artifacts_listing", ["region", "namespace", "repository"]),
                          ("ix_artifacts_digest", ["digest", "region", "name"])):  # fmt: skip
        op.create_index(name, "artifacts", columns, postgresql_where=TAG_ROWS, sqlite_where=TAG_ROWS)


def downgrade() -> None:
    op.drop_index("ix_artifacts_listing", "artifacts")
    op.drop_index("ix_artifacts_digest", "artifacts")
    op.create_index("ix_artifacts_listing", "artifacts", ["region", "namespace", "repository", "kind"])
    op.create_index("ix_artifacts_digest", "artifacts", ["digest", "region", "name"])
