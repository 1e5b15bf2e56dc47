"""Apply a batch of image events to the database: history rows plus inventory rows.

Called by the inventory worker inside one transaction per batch; the runner commits the Kafka
offsets only after that transaction committed. Every statement is idempotent, so a batch that
is redelivered after a crash converges to the same rows. Portable SQLAlchemy statements, used
on SQLite; ``store_pg.py`` does the same on Postgres with one array statement per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, and_, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import Artifact, ImageEventRecord, is_tag_row
from workers.db.upsert import insert_for
from workers.events.model import ImageEvent
from workers.inventory.core import InventoryChanges, RowWrite, fold_events

ARTIFACTS: Table = Artifact.__table__  # type: ignore[assignment]
EVENTS: Table = ImageEventRecord.__table__  # type: ignore[assignment]


class SessionInventoryWriter:
    """Writes a batch in one session transaction; may block on the database lock."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self._sessions = sessions

    async def __call__(self, events: Sequence[ImageEvent], now: datetime) -> None:
        async with self._sessions.begin() as session:
            await record_events(session, events, now)


async def record_events(session: AsyncSession, events: Sequence[ImageEvent], now: datetime) -> None:
    """Write history and inventory for ``events`` (in topic order). Does not commit."""
    await _insert_history(session, events, now)
    await apply_changes(session, fold_events(events), now)


async def apply_changes(session: AsyncSession, changes: InventoryChanges, now: datetime) -> None:
    pushes = [w for w in changes.writes.values() if not w.deleted]
    deletes = [w for w in changes.writes.values() if w.deleted]
    await _upsert(session, pushes, now, PUSH_COLUMNS)
    await _upsert(session, deletes, now, DELETE_COLUMNS)
    await _delete_tags_of_digests(session, changes, now)
    await _record_pulls(session, changes)


async def _insert_history(session: AsyncSession, events: Sequence[ImageEvent], now: datetime) -> None:
    rows = [
        {
            "id": e.id,
            "source": e.source.value,
            "region": e.region,
            "action": e.action.value,
            "kind": e.kind.value,
            "name": e.name,
            "tag": e.tag,
            "digest": e.digest,
            "actor": e.actor,
            "occurred_at": e.occurred_at,
            "recorded_at": now,
        }
        for e in {event.id: event for event in events}.values()
    ]
    if rows:
        await session.execute(insert_for(session, EVENTS).on_conflict_do_nothing(), rows)


def _row(write: RowWrite, now: datetime) -> dict[str, object]:
    return {
        "region": write.region,
        "name": write.name,
        "namespace": write.namespace,
        "repository": write.repository,
        "ref": write.ref,
        "kind": write.kind,
        "tag": write.tag,
        "digest": write.digest,
        "media_type": write.media_type,
        "size": write.size,
        "pushed_at": None if write.deleted else write.event_at,
        "deleted_at": write.event_at if write.deleted else None,
        "event_at": write.event_at,
        "updated_at": now,
    }


# Columns a push sets on an existing row; a delete only marks it (keeping what was pushed).
PUSH_COLUMNS = ("kind", "digest", "media_type", "size", "pushed_at", "deleted_at", "event_at", "updated_at")
DELETE_COLUMNS = ("deleted_at", "event_at", "updated_at")


async def _upsert(session: AsyncSession, writes: list[RowWrite], now: datetime, columns: tuple[str, ...]) -> None:
    """Insert or update artifact rows; a row newer than the write (``event_at``) is left alone."""
    if not writes:
        return
    stmt = insert_for(session, ARTIFACTS)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["region", "name", "ref"],
        set_={column: new[column] for column in columns},
        where=ARTIFACTS.c.event_at <= new.event_at,
    )
    # executemany with a cached statement (one row per database message on asyncpg; see README)
    await session.execute(stmt, [_row(w, now) for w in writes])


async def _delete_tags_of_digests(session: AsyncSession, changes: InventoryChanges, now: datetime) -> None:
    if not changes.digest_deletions:
        return
    stmt = (
        update(ARTIFACTS)
        .where(
            and_(
                ARTIFACTS.c.region == bindparam("b_region"),
                ARTIFACTS.c.name == bindparam("b_name"),
                ARTIFACTS.c.digest == bindparam("b_digest"),
                is_tag_row(ARTIFACTS.c.tag),
                ARTIFACTS.c.deleted_at.is_(None),
                ARTIFACTS.c.event_at <= bindparam("b_at"),
            )
        )
        .values(deleted_at=bindparam("b_at"), event_at=bindparam("b_at"), updated_at=now)
    )
    params = [
        {"b_region": d.region, "b_name": d.name, "b_digest": d.digest, "b_at": d.at} for d in changes.digest_deletions
    ]
    await session.execute(stmt, params)


async def _record_pulls(session: AsyncSession, changes: InventoryChanges) -> None:
    if not changes.pulls:
        return
    stmt = (
        update(ARTIFACTS)
        .where(
            and_(
                ARTIFACTS.c.region == bindparam("b_region"),
                ARTIFACTS.c.name == bindparam("b_name"),
                ARTIFACTS.c.ref == bindparam("b_ref"),
                or_(ARTIFACTS.c.pulled_at.is_(None), ARTIFACTS.c.pulled_at < bindparam("b_at")),
            )
        )
        .values(pulled_at=bindparam("b_at"))
    )
    params = [{"b_region": r, "b_name": n, "b_ref": ref, "b_at": at} for (r, n, ref), at in changes.pulls.items()]
    await session.execute(stmt, params)
