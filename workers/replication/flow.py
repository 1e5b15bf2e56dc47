"""The replication worker: tagged pushes → automatic sync jobs queued → runner woken → commit.

Queuing happens in the consumer's batch (one transaction, keyed so a redelivered event
queues nothing); the copies run in the ``JobRunner`` companion, off the poll loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import SyncRule
from workers.events.model import ImageEvent
from workers.replication.matching import AutoSyncRule, plan_auto_sync
from workers.replication.runner import JobRunner
from workers.replication.store import queue_jobs


class AutoSyncMatcher:
    """Queues one job per automatic sync rule of each pushed repository."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: JobRunner,
        local_region: str,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._runner = runner
        self._region = local_region
        self._clock = clock

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        namespaces = {event.namespace for event in events}
        async with self._sessions.begin() as session:
            rows = await session.scalars(select(SyncRule).where(SyncRule.sync_auto, SyncRule.namespace.in_(namespaces)))
            rules = [
                AutoSyncRule(r.id, r.namespace, r.repository, r.remote_region, r.remote_namespace, r.override)
                for r in rows
            ]
            created = await queue_jobs(session, plan_auto_sync(events, rules, self._region), self._clock())
        self._runner.wake(created)
