"""Dispatch due schedule slots as commands onto Kafka, exactly once across replicas.

``dispatch_due`` claims the latest due slot by inserting its deterministic id (primary key):
the replica whose insert succeeds publishes the command and commits the claim only after the
broker acknowledged it; every other replica finds the row and does nothing. A failed publish
rolls the claim back, so the next check (every ``CATCH_UP_S``) dispatches it again. APScheduler
fires the configured cron triggers; the periodic catch-up also covers fire times missed during
downtime, coalesced into one run, and fires the schedules stored with policies in the database
(so those fire within ``CATCH_UP_S`` of their time).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers import metrics
from workers.db.models import ScheduleSlot
from workers.db.upsert import insert_for
from workers.maintenance.commands import Command
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage, Producer
from workers.scheduler.slots import latest_slot, slot_id

log = logging.getLogger(__name__)

SLOTS: Table = ScheduleSlot.__table__  # type: ignore[assignment]
CATCH_UP_S = 10


@dataclass(frozen=True)
class Schedule:
    """A cron schedule and the command each of its slots dispatches.

    ``not_before``: slots earlier than this never fire (a policy created at 23:00 with a daily
    02:00 schedule waits for the next 02:00 instead of running at once).
    """

    job: str
    trigger: CronTrigger
    command: Callable[[str, datetime], Command]  # (slot id, slot time) → command
    not_before: datetime | None = None


# Schedules kept in the database (replication and retention policies), reloaded at every check.
ScheduleSource = Callable[[], Awaitable[list[Schedule]]]


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: Producer,
        topic: str,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._producer = producer
        self._topic = topic
        self._clock = clock

    async def dispatch_due(self, schedule: Schedule) -> str | None:
        """Dispatch the latest due slot unless some replica already did; returns its id if this call did."""
        now = self._clock()
        slot_at = latest_slot(schedule.trigger, now)
        if slot_at is None or (schedule.not_before is not None and slot_at < schedule.not_before):
            return None
        ident = slot_id(schedule.job, slot_at)
        row = {"id": ident, "job": schedule.job, "slot_at": slot_at, "dispatched_at": now, "completed_at": None}
        async with self._sessions.begin() as session:
            claimed = await session.execute(
                insert_for(session, SLOTS).values(row).on_conflict_do_nothing().returning(SLOTS.c.id)
            )
            if claimed.first() is None:
                return None
            command = schedule.command(ident, slot_at)
            await self._producer.publish([OutgoingMessage(self._topic, schedule.job.encode(), command.encode())])
        metrics.SLOTS_DISPATCHED.labels(command.kind).inc()
        log.info("dispatched %s", ident, extra={"execution_id": ident})
        return ident

    async def check_all(self, schedules: Sequence[Schedule]) -> None:
        for schedule in schedules:
            try:
                await self.dispatch_due(schedule)
            except (BrokerUnavailable, OSError, ConnectionError) as exc:
                log.warning("could not dispatch %s yet (%r); the next check retries", schedule.job, exc)
            except Exception:
                log.exception("dispatching %s failed", schedule.job)


async def run_scheduler(
    dispatcher: Dispatcher, schedules: Sequence[Schedule], stop: asyncio.Event, source: ScheduleSource | None = None
) -> None:
    """Fire ``schedules`` until ``stop`` is set; those of ``source`` at each catch-up check."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    for schedule in schedules:
        scheduler.add_job(
            dispatcher.dispatch_due,
            schedule.trigger,
            args=[schedule],
            id=schedule.job,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    async def catch_up() -> None:
        stored: list[Schedule] = []
        if source is not None:
            try:
                stored = await source()
            except Exception:
                log.exception("could not load stored schedules; the next check retries")
        await dispatcher.check_all([*schedules, *stored])

    scheduler.add_job(
        catch_up,
        IntervalTrigger(seconds=CATCH_UP_S, timezone=UTC),
        id="catch-up",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
