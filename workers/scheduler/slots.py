"""Which slot of a cron schedule is due. Pure.

A slot is one fire time of a schedule. Its id is deterministic (``{job}:{fire time}``) so that
any number of scheduler replicas, or a restart, agree on it; the database's primary key on the
id lets exactly one of them dispatch it. Fire times missed during downtime coalesce: only the
latest slot at or before *now* is ever due.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

LOOKBACKS = (timedelta(days=1), timedelta(days=32), timedelta(days=400))


def latest_slot(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` (within about a year)."""
    for lookback in LOOKBACKS:
        latest: datetime | None = None
        fire: datetime | None = trigger.get_next_fire_time(None, now - lookback)
        while fire is not None and fire <= now:
            latest = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        if latest is not None:
            return latest
    return None


def slot_id(job: str, fire_time: datetime) -> str:
    return f"{job}:{fire_time.isoformat()}"
