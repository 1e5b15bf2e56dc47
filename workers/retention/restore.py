"""Undo a retention deletion: re-push the kept manifest under its tags (API and CLI).

Works while the entry is within its grace period and the registry still has the blobs (no
garbage collection ran since); the manifest bytes are exactly those deleted, so the digest is
the same. Raises ``LookupError`` when nothing restorable matches, ``RegistryError`` when the
registry refuses (e.g. ``MANIFEST_BLOB_UNKNOWN`` after a garbage collection).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers import metrics
from workers.db.models import RetentionTrash
from workers.iam.audit import IMAGE_RESTORED, record_system_action
from workers.replication.clients import RegionClients
from workers.replication.manifests import Manifest


async def restore(
    sessions: async_sessionmaker[AsyncSession],
    clients: RegionClients,
    clock: Callable[[], datetime],
    namespace: str,
    repository: str,
    reference: str,
) -> RetentionTrash:
    """Restore the newest deletion of ``reference`` (a digest, or one of the deleted tags)."""
    now = clock()
    async with sessions() as session:
        query = select(RetentionTrash).where(
            RetentionTrash.namespace == namespace,
            RetentionTrash.repository == repository,
            RetentionTrash.restored_at.is_(None),
            RetentionTrash.expires_at > now,
        )
        candidates = (await session.scalars(query.order_by(RetentionTrash.id.desc()))).all()
    entry = next((e for e in candidates if reference in (e.digest, *e.tags)), None)
    if entry is None:
        raise LookupError(f"nothing restorable for {namespace}/{repository} {reference!r} (grace period over?)")
    manifest = Manifest(entry.media_type, entry.digest, base64.b64decode(entry.manifest))
    client = clients.client(entry.region)
    name = f"{namespace}/{repository}"
    for tag in entry.tags or [entry.digest]:
        await client.put_manifest(name, tag, manifest)
    async with sessions.begin() as session:
        stored = await session.get(RetentionTrash, entry.id)
        assert stored is not None
        stored.restored_at = clock()
        tags = ", ".join(entry.tags) or "(none)"
        await record_system_action(
            session,
            IMAGE_RESTORED,
            f"{namespace}/{repository}@{entry.digest}",
            f"re-pushed under tags {tags} (retention run {entry.run_id})",
        )
    metrics.RETENTION_TAGS_RESTORED.inc(len(entry.tags))
    return entry
