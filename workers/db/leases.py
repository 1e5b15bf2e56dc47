"""Claiming queued rows under a lease: the work queue shared by trigger deliveries and copy jobs.

A row is due when it waits (``waiting_status``) and its ``next_attempt_at`` has come, or when
it is ``running`` under an expired ``lease_until`` (its worker died). Candidates are read, then
taken with a conditional UPDATE: two workers claiming one row, exactly one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import BigInteger, and_, any_, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

RUNNING = "running"
Row = TypeVar("Row")


def id_in(session: AsyncSession, column: Any, ids: Sequence[int]) -> Any:
    """``column IN ids``; on Postgres ``= ANY(array)``: one statement text whatever the number of ids
    (an IN list per length would be a new prepared statement on every pooled connection)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger), unique=True))
    return column.in_(ids)


async def claim_due(
    session: AsyncSession,
    model: type[Row],
    waiting_status: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    ids: Sequence[int] | None = None,
) -> list[Row]:
    """Lease up to ``limit`` due rows of ``model`` (or exactly ``ids``, if due). Commits the claim."""
    table: Any = model
    due = or_(
        and_(table.status == waiting_status, table.next_attempt_at <= now),
        and_(table.status == RUNNING, table.lease_until < now),
    )
    query = select(table.id).where(due).order_by(table.next_attempt_at).limit(limit)
    if ids is not None:
        query = query.where(id_in(session, table.id, ids))
    candidates = list((await session.scalars(query)).all())
    if not candidates:
        return []
    claimed = await session.scalars(
        update(table)
        .where(id_in(session, table.id, candidates), due)
        .values(status=RUNNING, lease_until=now + lease, updated_at=now)
        .returning(table)
        .execution_options(synchronize_session=False)
    )
    rows: list[Row] = list(claimed.all())
    await session.commit()
    return rows


async def renew(session: AsyncSession, model: type[Row], ids: Sequence[int], until: datetime) -> None:
    """Extend the lease of rows this process still runs (rows finished meanwhile are left alone).

    Rows another transaction holds (their outcome being written right now) are skipped, never
    waited for: a renewal can then not deadlock with the outcome writes.
    """
    table: Any = model
    held_here = (
        select(table.id)
        .where(id_in(session, table.id, ids), table.status == RUNNING)
        .order_by(table.id)
        .with_for_update(skip_locked=True)
    )
    await session.execute(
        update(table)
        .where(table.id.in_(held_here))
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
