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

from workers.db import versions
from workers.events.model import ImageEvent
from workers.triggers.delivery import Deliverer
from workers.triggers.matching import PayloadContext, PolicyRule, TriggerRule, plan_deliveries
from workers.triggers.store import load_rules, record_deliveries


class RuleCache:
    """Every enabled trigger and policy, parsed once, reloaded when the rules' version moved.

    Every API change bumps ``rule_versions['triggers']`` in its own transaction, so a batch
    costs one primary-key lookup instead of two table reads, and conditions and scope rules
    are compiled once rather than for every batch.
    """

    def __init__(self) -> None:
        self._version = -1
        self._rules: tuple[list[TriggerRule], list[PolicyRule]] = ([], [])

    async def rules(self, session: AsyncSession) -> tuple[list[TriggerRule], list[PolicyRule]]:
        version = await versions.current(session, versions.TRIGGER_RULES)
        if version != self._version:
            self._rules = await load_rules(session, None)
            self._version = version
        return self._rules


class TriggerMatcher:
    """Records the deliveries a batch of events causes and hands them to the deliverer.

    The rows are inserted already leased to this process's deliverer, which starts their first
    attempt at once without a claim round trip; if this process dies, the leases expire and
    any deliverer picks them up.
    """

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
        self._cache = RuleCache()

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        await self._deliverer.wait_for_room()
        async with self._sessions.begin() as session:
            triggers, policies = await self._cache.rules(session)
            namespaces = {event.namespace for event in events}
            planned = plan_deliveries(
                events,
                [t for t in triggers if t.namespace in namespaces],
                [p for p in policies if p.namespace in namespaces],
                self._context,
            )
            created = await record_deliveries(session, planned, self._clock(), lease=self._deliverer.lease)
        self._deliverer.submit(created)
