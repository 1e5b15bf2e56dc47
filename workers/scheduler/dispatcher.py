"""Dispatch due schedule slots as commands onto Kafka, exactly once across replicas.

``dispatch_due`` claims the latest due slot by inserting its deterministic id (primary key):
the replica whose insert succeeds publishes the command and commits the claim only after the
broker acknowledged it; every other replica finds the row and does nothing. A failed publish
rolls the claim back, so the next check (every ``CATCH_UP_S``) dispatches it again. APScheduler
fires the cron triggers; the periodic catch-up also covers fire times missed during downtime,
coalesced into one run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import ScheduleSlot
from workers.db.upsert import insert_for
from workers.maintenance.commands import Command
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage, Producer
from workers.scheduler.slots import latest_slot, slot_id

log = logging.getLogger(__name__)

SLOTS: Table = ScheduleSlot.__table__  # type: ignore[assignment]
CATCH_UP_S = 30


@dataclass(frozen=True)
class Schedule:
    """A cron schedule and the command each of its slots dispatches."""

    job: str
    trigger: CronTrigger
    command: Callable[[str, datetime], Command]  # (slot id, slot time) → command


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
        if slot_at is None:
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
        log.info("dispatched %s", ident)
        return ident

    async def check_all(self, schedules: Sequence[Schedule]) -> None:
        for schedule in schedules:
            try:
                await self.dispatch_due(schedule)
            except (BrokerUnavailable, OSError, ConnectionError) as exc:
                log.warning("could not dispatch %s yet (%r); the next check retries", schedule.job, exc)
            except Exception:
                log.exception("dispatching %s failed", schedule.job)


async def run_scheduler(dispatcher: Dispatcher, schedules: Sequence[Schedule], stop: asyncio.Event) -> None:
    """Fire ``schedules`` until ``stop`` is set."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    for schedule in schedules:
        scheduler.add_job(
            dispatcher.dispatch_due, schedule.trigger, args=[schedule], id=schedule.job,
            coalesce=True, max_instances=1, misfire_grace_time=None,
        )  # fmt: skip
    scheduler.add_job(
        dispatcher.check_all, IntervalTrigger(seconds=CATCH_UP_S, timezone=UTC), args=[schedules], id="catch-up",
        coalesce=True, max_instances=1, next_run_time=datetime.now(UTC),
    )  # fmt: skip
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
