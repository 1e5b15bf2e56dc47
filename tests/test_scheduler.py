"""The scheduler dispatches each slot once across replicas; a maintenance worker applies it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.metrics import sample
from tests.support.service import running_service, service_settings, wait_for
from tests.support.services import KafkaBroker
from workers.config import KafkaSettings
from workers.db.engine import create_engine, session_factory
from workers.db.migrate import upgrade_to_head
from workers.db.models import ImageEventRecord, RetentionPolicy, ScheduleSlot
from workers.maintenance.commands import SWEEP_HISTORY
from workers.runtime.kafka import Topics, ensure_topics
from workers.runtime.producer import KafkaProducer
from workers.scheduler.dispatcher import Dispatcher
from workers.scheduler.slots import latest_slot
from workers.topology import schedules, stored_schedules

NOW = datetime(2026, 11, 22, 10, 30, 15, tzinfo=UTC)


def test_latest_slot_is_the_last_fire_time_at_or_before_now() -> None:
    daily = CronTrigger.from_crontab("17 3 * * *", timezone=UTC)
    assert latest_slot(daily, NOW) == datetime(2026, 11, 22, 3, 17, tzinfo=UTC)
    assert latest_slot(daily, datetime(2026, 11, 22, 3, 17, tzinfo=UTC)) == datetime(2026, 11, 22, 3, 17, tzinfo=UTC)
    monthly = CronTrigger.from_crontab("0 0 1 * *", timezone=UTC)
    assert latest_slot(monthly, NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    minutely = CronTrigger.from_crontab("* * * * *", timezone=UTC)
    assert latest_slot(minutely, NOW) == datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


async def test_two_replicas_dispatch_one_slot_once(engine: AsyncEngine, kafka: KafkaBroker, topic_prefix: str) -> None:
    settings = service_settings("sqlite+aiosqlite:///:memory:", kafka.bootstrap, topic_prefix)
    kafka_settings = KafkaSettings(
        bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=1, idempotence=False
    )
    topics = Topics.from_prefix(topic_prefix)
    await ensure_topics(kafka_settings, kafka.bootstrap, topics)
    producers = [KafkaProducer(kafka_settings, kafka.bootstrap) for _ in range(2)]
    for producer in producers:
        await producer.start()
    try:
        replicas = [Dispatcher(session_factory(engine), p, topics.commands, lambda: NOW) for p in producers]
        sweep = next(s for s in schedules(settings) if s.job == SWEEP_HISTORY)
        dispatched = sample("rw_scheduler_slots_dispatched_total", command=SWEEP_HISTORY)
        results = await asyncio.gather(*(r.dispatch_due(sweep) for r in replicas for _ in range(3)))
        assert len([r for r in results if r]) == 1
        assert sample("rw_scheduler_slots_dispatched_total", command=SWEEP_HISTORY) - dispatched == 1
        # a later check, e.g. after a restart, finds the slot taken
        assert await replicas[1].dispatch_due(sweep) is None
    finally:
        for producer in producers:
            await producer.stop()
    consumer = AIOKafkaConsumer(topics.commands, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        assert sum(len(records) for records in batches.values()) == 1
    finally:
        await consumer.stop()


async def test_scheduled_sweep_deletes_old_history(kafka: KafkaBroker, postgres_url: str, topic_prefix: str) -> None:
    engine = create_engine(postgres_url)
    await upgrade_to_head(engine)
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"h{age}",
            "source": "distribution",
            "region": "region-a",
            "action": "push",
            "kind": "manifest",
            "name": "team/app",
            "tag": None,
            "digest": None,
            "actor": None,
            "occurred_at": now - timedelta(days=age),
            "recorded_at": now - timedelta(days=age),
        }
        for age in (0, 1, 10, 30)
    ]
    async with session_factory(engine).begin() as session:
        await session.execute(insert(ImageEventRecord), rows)
    settings = service_settings(postgres_url, kafka.bootstrap, topic_prefix, sweep_cron="* * * * *")

    async def remaining() -> list[str] | None:
        async with session_factory(engine)() as session:
            ids = sorted((await session.execute(select(ImageEventRecord.id))).scalars())
            done = (
                await session.execute(select(func.count()).where(ScheduleSlot.completed_at.is_not(None)))
            ).scalar_one()
        return ids if done else None

    try:
        async with running_service(settings):
            assert await wait_for(remaining, limit_s=30) == ["h0", "h1"]
    finally:
        await engine.dispose()


async def test_two_schedulers_fire_a_stored_retention_schedule_once(
    engine: AsyncEngine, kafka: KafkaBroker, topic_prefix: str
) -> None:
    """Policies' cron schedules come from the database; two replicas dispatch each slot once."""
    kafka_settings = KafkaSettings(
        bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=1, idempotence=False
    )
    topics = Topics.from_prefix(topic_prefix)
    await ensure_topics(kafka_settings, kafka.bootstrap, topics)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        session.add(
            RetentionPolicy(
                edition="basic",
                namespace="team",
                repository="app",
                name="",
                algorithm="or",
                rules=[{"template": "tag_rule", "params": {"num": 1}, "tag_selectors": []}],
                enabled=True,
                cron="0 * * * *",
                creator="test",
                created_at=NOW - timedelta(days=1),
                updated_at=NOW - timedelta(days=1),
            )
        )
    producers = [KafkaProducer(kafka_settings, kafka.bootstrap) for _ in range(2)]
    for producer in producers:
        await producer.start()
    try:
        (retention,) = [s for s in await stored_schedules(sessions) if s.job.startswith("retention-policy-")]
        replicas = [Dispatcher(sessions, p, topics.commands, lambda: NOW) for p in producers]
        results = await asyncio.gather(*(r.dispatch_due(retention) for r in replicas for _ in range(3)))
        assert len([r for r in results if r]) == 1
    finally:
        for producer in producers:
            await producer.stop()
    consumer = AIOKafkaConsumer(topics.commands, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        (record,) = [r for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    command = orjson.loads(record.value)
    assert command["kind"] == "run-retention" and command["id"] == "retention-policy-1:2026-11-22T10:00:00+00:00"
