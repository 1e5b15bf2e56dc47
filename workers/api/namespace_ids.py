"""Numeric namespace ids of the enterprise API (``namespace_id`` in answers and list filters)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import Namespace


async def ensure_namespace_id(session: AsyncSession, name: str, clock: Callable[[], datetime]) -> int:
    """The id of ``name``, numbering it on first use (a concurrent first use is read back)."""
    existing = await session.scalar(select(Namespace.id).where(Namespace.name == name))
    if existing is not None:
        return existing
    namespace = Namespace(name=name, created_at=clock())
    try:
        async with session.begin_nested():
            session.add(namespace)
    except IntegrityError:
        found = await session.scalar(select(Namespace.id).where(Namespace.name == name))
        assert found is not None
        return found
    return namespace.id


async def namespace_ids(session: AsyncSession, names: Iterable[str]) -> dict[str, int]:
    """Ids of the numbered namespaces among ``names`` (absent: never numbered, answered as 0)."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = await session.execute(select(Namespace.name, Namespace.id).where(Namespace.name.in_(wanted)))
    return {name: namespace_id for name, namespace_id in rows.all()}


async def namespace_name(session: AsyncSession, namespace_id: int) -> str | None:
    """The name behind a ``namespace_id`` query parameter; None when unknown."""
    namespace = await session.get(Namespace, namespace_id)
    return namespace.name if namespace else None
