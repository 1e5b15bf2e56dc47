"""The inventory worker: image events → artifacts rows plus history, one transaction a batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from workers.db.engine import session_factory
from workers.events.model import ImageEvent, decode_event
from workers.inventory.store import SessionInventoryWriter
from workers.inventory.store_pg import PostgresInventoryWriter
from workers.runtime.flow import Record


class InventoryWriter(Protocol):
    def __call__(self, events: Sequence[ImageEvent], now: datetime) -> Awaitable[None]: ...


def decode_image_event(record: Record) -> ImageEvent:
    """Raises ``InvalidMessage`` for anything that is not an ``image-events.v1`` document."""
    return decode_event(record.value)


def inventory_writer(engine: AsyncEngine) -> InventoryWriter:
    """Array statements on Postgres; portable SQLAlchemy statements elsewhere (SQLite)."""
    if engine.dialect.name == "postgresql":
        return PostgresInventoryWriter(engine)
    return SessionInventoryWriter(session_factory(engine))


class InventoryRecorder:
    """Writes a batch's history and inventory rows in one transaction; idempotent."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]):
        self._write = inventory_writer(engine)
        self._clock = clock

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        await self._write(events, self._clock())
