"""The inventory worker: image events → artifacts rows plus history, one transaction a batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.events.model import ImageEvent, decode_event
from workers.inventory.store import record_events
from workers.runtime.flow import Record


def decode_image_event(record: Record) -> ImageEvent:
    """Raises ``InvalidMessage`` for anything that is not an ``image-events.v1`` document."""
    return decode_event(record.value)


class InventoryRecorder:
    """Writes a batch's history and inventory rows in one transaction; idempotent."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]):
        self._sessions = sessions
        self._clock = clock

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        async with self._sessions.begin() as session:
            await record_events(session, events, self._clock())
