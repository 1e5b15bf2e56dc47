"""Rule versions: writers bump a counter in the same transaction as their change; workers that
cache parsed rules read it (one primary-key lookup) and reload only when it moved."""

from __future__ import annotations

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import RuleVersion
from workers.db.upsert import insert_for

VERSIONS: Table = RuleVersion.__table__  # type: ignore[assignment]
TRIGGER_RULES = "triggers"  # deployment triggers and webhook policies
REPLICATION_RULES = "replication"  # automatic sync rules and replication policies


async def bump(session: AsyncSession, kind: str) -> None:
    """Mark ``kind`` changed; call inside the transaction that changes it."""
    stmt = insert_for(session, VERSIONS).values(kind=kind, version=1)
    await session.execute(stmt.on_conflict_do_update(index_elements=["kind"], set_={"version": VERSIONS.c.version + 1}))


_CURRENT = select(RuleVersion.version).where(RuleVersion.kind == bindparam("kind"))  # built once: read per batch


async def current(session: AsyncSession, kind: str) -> int:
    return int(await session.scalar(_CURRENT, {"kind": kind}) or 0)
