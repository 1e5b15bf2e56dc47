"""The consumer runner on the real broker: batches across partitions, order, isolation, commits.

- a batch gathers the queued records of many partitions (one transaction for many), and
  records of one key are still handled in offset order, one batch after another;
- a batch that hangs holds up only its own partitions: others keep flowing beside it;
- offsets are committed only for handled records: a second runner in the same group sees
  nothing that was handled, and everything that was not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.support.service import service_settings
from workers.config import Settings
from workers.runtime.deadletter import DeadLetters
from workers.runtime.flow import Consumer, Flow, Record
from workers.runtime.kafka import Topics, ensure_topics
from workers.runtime.producer import KafkaProducer, OutgoingMessage
from workers.runtime.runner import ConsumerRunner
from workers.runtime.step import RunnerOptions

PARTITIONS = 6


@dataclass(frozen=True)
class Message:
    key: str
    seq: int
    partition: int


Handle = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass
class Bench:
    settings: Settings
    topics: Topics
    producer: KafkaProducer
    bootstrap: str
    group: str

    async def send(self, key: str, seqs: range) -> None:
        await self.producer.publish(
            [
                OutgoingMessage(self.topics.image_events, key.encode(), json.dumps({"key": key, "seq": s}).encode())
                for s in seqs
            ]
        )

    def runner(self, handle: Handle, **options: Any) -> ConsumerRunner:
        def decode(record: Record) -> Message:
            document = json.loads(record.value or b"")
            return Message(document["key"], document["seq"], record.partition)

        flow = Flow(kind="probe", topic=self.topics.image_events, decode=decode, handle=handle)
        consumer = Consumer(self.topics.image_events, self.group, (flow,))
        chosen = {"max_batch": 500, "max_buffered": 1000, "commit_interval_s": 0.05, "drain_timeout_s": 5}
        chosen |= {"concurrency": 2} | options
        dead_letters = DeadLetters(self.producer, self.topics.dead_letter)
        return ConsumerRunner(consumer, self.settings.kafka, self.bootstrap, RunnerOptions(**chosen), dead_letters)


@pytest.fixture
async def bench(kafka: Any, topic_prefix: str) -> AsyncIterator[Bench]:
    settings = service_settings("sqlite+aiosqlite:///unused.db", kafka.bootstrap, topic_prefix)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"partitions": PARTITIONS})})
    topics = Topics.from_prefix(topic_prefix)
    await ensure_topics(settings.kafka, kafka.bootstrap, topics)
    producer = KafkaProducer(settings.kafka, kafka.bootstrap)
    await producer.start()
    try:
        yield Bench(settings, topics, producer, kafka.bootstrap, f"{topic_prefix}.probe")
    finally:
        await producer.stop()


async def run_until(runner: ConsumerRunner, done: Callable[[], bool], timeout_s: float = 30) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_for(done, task, timeout_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_batch_spans_partitions_and_each_key_keeps_its_order(bench: Bench) -> None:
    keys = [f"team/app-{n}" for n in range(24)]
    for key in keys:
        await bench.send(key, range(0, 20))
    batches: list[list[Message]] = []

    async def handle(messages: Sequence[Message]) -> None:
        batches.append(list(messages))
        await asyncio.sleep(0.01)  # like a transaction: the next batch gathers meanwhile

    await run_until(bench.runner(handle), lambda: sum(map(len, batches)) >= len(keys) * 20)

    handled = [m for batch in batches for m in batch]
    assert len(handled) == len(keys) * 20
    for key in keys:
        assert [m.seq for m in handled if m.key == key] == list(range(20)), key
    assert max(len({m.partition for m in batch}) for batch in batches) > 1, "no batch spanned partitions"
    assert len(batches) < len(keys) * 20 // 5, f"{len(batches)} batches for {len(handled)} records"


async def test_a_hanging_batch_holds_up_only_its_own_partitions(bench: Bench) -> None:
    await bench.send("team/stuck", range(1))
    release = asyncio.Event()
    handled: list[Message] = []

    async def handle(messages: Sequence[Message]) -> None:
        if any(m.key == "team/stuck" for m in messages):
            await release.wait()
        handled.extend(messages)

    stop = asyncio.Event()
    runner = bench.runner(handle)
    task = asyncio.create_task(runner.run(stop))
    others = [f"team/free-{n}" for n in range(12)]
    try:
        await wait_for(lambda: bool(runner.steps[0]._batches), task)  # the stuck record is in flight
        (stuck_batch,) = runner.steps[0]._batches
        stuck_partition = stuck_batch.records[0].partition
        for key in others:
            await bench.send(key, range(3))
        free = [key for key in others if partition_of(key) != stuck_partition]
        await wait_for(lambda: sum(m.key in free for m in handled) == 3 * len(free), task)
        assert all(m.key != "team/stuck" for m in handled)
        release.set()
        await wait_for(lambda: len(handled) == 1 + 3 * len(others), task)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 30)
    assert [m.seq for m in handled if m.key == others[0]] == [0, 1, 2]


async def wait_for(condition: Callable[[], bool], task: asyncio.Task[None], timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the runner did not get there in time"
        assert not task.done(), task
        await asyncio.sleep(0.02)


def partition_of(key: str) -> int:
    """The partition the producer's default partitioner (murmur2, as Kafka's) chooses for ``key``."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), partitions, partitions))


async def test_only_handled_records_are_committed(bench: Bench) -> None:
    await bench.send("team/first", range(10))
    await bench.send("team/second", range(10))
    seen: list[Message] = []

    async def refuse_second(messages: Sequence[Message]) -> None:
        kept = [m for m in messages if m.key == "team/first"]
        if len(kept) < len(messages):
            await asyncio.Event().wait()  # never finishes: cancelled at the drain deadline
        seen.extend(kept)

    await run_until(bench.runner(refuse_second, drain_timeout_s=0.5, max_batch=1), lambda: len(seen) >= 10)
    assert [m.seq for m in seen] == list(range(10))

    replayed: list[Message] = []

    async def record(messages: Sequence[Message]) -> None:
        replayed.extend(messages)

    await run_until(bench.runner(record), lambda: len(replayed) >= 10)
    await asyncio.sleep(0.5)  # nothing more arrives
    assert [(m.key, m.seq) for m in replayed] == [("team/second", s) for s in range(10)]
