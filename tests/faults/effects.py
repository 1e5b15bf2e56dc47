"""What a fault scenario observes of the running service: topic offsets, consumer lag, row counts.

``BrokerProbe`` reads the broker the way an operator would (end offsets, committed offsets of
the service's consumer groups); ``row_counts`` counts every table in one statement. Both are
read-only, so a scenario can take them before and after each request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.db.models import Base
from workers.topology import consumer_group

# Written by every API call (audit) or by the scheduler on its own clock: not effects of input.
NOISY_TABLES = frozenset({"audit_events", "schedule_slots", "alembic_version"})
IMAGE_EVENT_KINDS = ("inventory", "triggers", "replication")


class BrokerProbe:
    """``async with BrokerProbe(bootstrap) as probe``: end offsets and consumer lag, read-only."""

    def __init__(self, bootstrap: str):
        self._bootstrap = bootstrap
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        # One group member per group, never subscribed (so never joining): it only reads the
        # group's committed offsets, with the request version the service's consumers use.
        self._readers: dict[str, AIOKafkaConsumer] = {}

    async def __aenter__(self) -> BrokerProbe:
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        for reader in self._readers.values():
            await reader.stop()
        await self._consumer.stop()

    async def _reader(self, group: str) -> AIOKafkaConsumer:
        if group not in self._readers:
            reader = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=group, enable_auto_commit=False)
            await reader.start()
            self._readers[group] = reader
        return self._readers[group]

    async def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """The next offset of every partition of ``topics`` (what has been produced so far)."""
        await self._consumer.topics()  # refreshes the metadata that lists partitions
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        return dict(await self._consumer.end_offsets(partitions)) if partitions else {}

    async def lag(self, topic: str, groups: Sequence[str]) -> int:
        """Messages of ``topic`` that one of ``groups`` has not committed yet."""
        ends = await self.end_offsets([topic])
        behind = 0
        for group in groups:
            reader = await self._reader(group)
            for partition, end in ends.items():
                done = await reader.committed(partition)
                behind += max(0, end - (done or 0))
        return behind

    async def wait_consumed(self, topic: str, groups: Sequence[str], limit_s: float = 30.0) -> None:
        """Until every message produced so far to ``topic`` is committed by every group."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while (behind := await self.lag(topic, groups)) > 0:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{behind} messages of {topic} still unconsumed by {', '.join(groups)}")
            await asyncio.sleep(0.1)


def groups_of(prefix: str, kinds: Sequence[str] = IMAGE_EVENT_KINDS) -> list[str]:
    """The consumer group of a worker running ``kinds`` (one group reads the topic for all of them)."""
    return [consumer_group(prefix, kinds)]


async def row_counts(engine: AsyncEngine, skip: frozenset[str] = NOISY_TABLES) -> dict[str, int]:
    """Rows per table of the service's schema, in one statement."""
    tables = [table.name for table in Base.metadata.sorted_tables if table.name not in skip]
    columns = ", ".join(f'(SELECT count(*) FROM "{name}") AS "{name}"' for name in tables)
    async with engine.connect() as connection:
        row = (await connection.execute(text(f"SELECT {columns}"))).one()
    return {name: int(value) for name, value in zip(tables, row, strict=True)}


def differences(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The keys whose value changed, with (before, after)."""
    return {
        key: (before.get(key, 0), after.get(key, 0)) for key in {*before, *after} if before.get(key) != after.get(key)
    }
