"""The triggers worker: image events → matching deliveries recorded → deliverer woken → commit.

Matching and recording happen inside the consumer's batch (fast, one transaction); the calls
themselves run in the ``Deliverer`` so that a slow receiver or a rollout being verified never
holds up the poll loop. Offsets are committed after the deliveries are written, so an event
is never lost; the unique delivery key makes a replayed event a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.events.model import ImageEvent
from workers.triggers.delivery import Deliverer
from workers.triggers.matching import PayloadContext, plan_deliveries
from workers.triggers.store import load_rules, record_deliveries


class TriggerMatcher:
    """Records the deliveries a batch of events causes and hands them to the deliverer."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        deliverer: Deliverer,
        context: PayloadContext,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._deliverer = deliverer
        self._context = context
        self._clock = clock

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        async with self._sessions.begin() as session:
            triggers, policies = await load_rules(session, {event.namespace for event in events})
            planned = plan_deliveries(events, triggers, policies, self._context)
            created = await record_deliveries(session, planned, self._clock())
        self._deliverer.wake(created)
