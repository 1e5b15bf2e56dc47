"""Run one consumer: poll Kafka, queue each record to every flow's step, commit what all did.

Design (why it looks like this):

- One consumer group per topic feeds every selected flow of that topic: the records are
  fetched and committed once, and each flow (a ``FlowStep``) batches, handles, retries and
  dead-letters them on its own, so a slow flow does not hold up the others' effects.
- The poll loop never waits for work: a partition with more than ``max_buffered`` records
  waiting in any step is ``pause``\\ d while the loop keeps polling, so the group never exceeds
  ``max_poll_interval_ms`` and never rebalances because of slow work (backpressure is a
  signal, not a sleep). It resumes once every step has drained it to half.
- A partition's committed offset is the lowest that every flow has finished (effects and
  history written); a committer commits it. Commit is always the last step.
- On revocation the steps stop taking the revoked partitions, their batches in flight finish
  (bounded), and the offsets are committed before the partitions move; queued records are
  simply redelivered. A batch abandoned at the drain deadline hands the records of
  partitions that stay assigned back to the front of their queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from workers import metrics
from workers.config import KafkaSettings
from workers.runtime.deadletter import DeadLetters
from workers.runtime.flow import Consumer, Record
from workers.runtime.kafka import consumer_options
from workers.runtime.step import FlowStep, RunnerOptions

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


class ConsumerRunner:
    """Consumes ``consumer.topic`` in ``consumer.group`` until ``stop`` is set, then drains."""

    def __init__(
        self,
        consumer: Consumer,
        kafka: KafkaSettings,
        bootstrap: str,
        options: RunnerOptions,
        dead_letters: DeadLetters,
    ):
        self.consumer = consumer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._options = options
        self.steps = [FlowStep(flow, options, dead_letters) for flow in consumer.flows]
        self._assigned: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        self._client: AIOKafkaConsumer | None = None

    @property
    def name(self) -> str:
        return "+".join(flow.kind for flow in self.consumer.flows)

    async def run(self, stop: asyncio.Event) -> None:
        """Blocks until ``stop`` is set; drains and commits before returning."""
        client = AIOKafkaConsumer(**consumer_options(self._kafka, self._bootstrap, self.consumer.group))
        client.subscribe([self.consumer.topic], listener=_Rebalance(self))
        self._client = client
        stopped = asyncio.create_task(stop.wait())
        # start() and getmany() can block while the broker is down: stop must never wait for
        # them, so both race against the stop signal and are cancelled when it wins.
        starting = asyncio.create_task(client.start())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done() or starting.exception() is not None:
            starting.cancel()
            stopped.cancel()
            await asyncio.gather(starting, stopped, return_exceptions=True)
            await self._stop_client(client)
            if not starting.cancelled():
                starting.result()  # re-raise why the consumer could not start
            return
        tasks = [asyncio.create_task(step.run(), name=f"batches-{step.flow.kind}") for step in self.steps]
        tasks.append(asyncio.create_task(self._commit_loop(stop), name=f"commit-{self.name}"))
        poller = asyncio.create_task(self._poll(client, stop), name=f"poll-{self.name}")
        try:
            await asyncio.wait([poller, stopped], return_when=asyncio.FIRST_COMPLETED)
            if poller.done():
                poller.result()  # a batch or the consumer failed: surface it
        finally:
            for task in (poller, stopped, *tasks):
                task.cancel()
            await asyncio.gather(poller, stopped, *tasks, return_exceptions=True)
            await self._close(list(self._assigned))
            await self._stop_client(client)

    async def _stop_client(self, client: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s consumer did not leave its group in time (broker unreachable?)", self.name)
        log.info("%s consumer stopped", self.name)

    async def _poll(self, client: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await client.getmany(timeout_ms=100, max_records=self._options.max_batch)
            self._queue(fetched)
            self._resume_drained()
            self._observe_lag()
            for step in self.steps:
                if step.failure is not None:
                    raise RuntimeError(f"{step.flow.kind} batch failed") from step.failure

    def _queue(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        assert self._client is not None
        assigned = self._client.assignment()
        for tp, raw in fetched.items():
            if not raw or tp not in assigned:
                continue
            self._assigned.add(tp)
            records = [_record(r) for r in raw]
            waiting = max(step.queue(tp, records) for step in self.steps)
            if waiting >= self._options.max_buffered:
                self._client.pause(tp)

    def _resume_drained(self) -> None:
        assert self._client is not None
        half = self._options.max_buffered // 2
        for tp in self._client.paused():
            if all(step.waiting(tp) <= half for step in self.steps):
                self._client.resume(tp)

    def _observe_lag(self) -> None:
        assert self._client is not None
        for tp in self._assigned:
            highwater = self._client.highwater(tp)
            if highwater is None:
                continue
            for step in self.steps:
                done = step.done(tp)
                if done is not None:
                    metrics.CONSUMER_LAG.labels(step.flow.kind, tp.topic, str(tp.partition)).set(
                        max(0, highwater - done)
                    )

    # -- committing ---------------------------------------------------------------------------

    def _finished(self, tp: TopicPartition) -> int | None:
        """The offset every flow has handled ``tp`` up to (None while one has not started)."""
        done = [step.done(tp) for step in self.steps]
        return None if None in done else min(d for d in done if d is not None)

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._options.commit_interval_s)
            await self._commit(list(self._assigned))

    async def _commit(self, tps: Sequence[TopicPartition]) -> None:
        offsets = {}
        for tp in tps:
            finished = self._finished(tp)
            if finished is not None and finished != self._committed.get(tp):
                offsets[tp] = OffsetAndMetadata(finished, "")
        if not offsets or self._client is None:
            return
        try:
            await asyncio.wait_for(self._client.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            # The work is done and idempotent; a later commit (or the next owner) catches up.
            log.warning("%s: commit of %d partition(s) failed: %r", self.name, len(offsets), exc)
            return
        self._committed.update({tp: offset.offset for tp, offset in offsets.items()})

    async def _close(self, tps: Sequence[TopicPartition]) -> None:
        """Stop taking work on ``tps``, finish what is in flight (bounded), commit it."""
        for step in self.steps:
            step.stop_taking(tps)
        tasks = set().union(*(step.in_flight(tps) for step in self.steps))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._options.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%s: %d batch(es) did not drain in time; their records come again", self.name, len(pending))
                await asyncio.wait(pending)
        await self._commit(tps)
        for step in self.steps:
            step.forget(tps)
        for tp in tps:
            self._assigned.discard(tp)
            self._committed.pop(tp, None)
            for step in self.steps:
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(step.flow.kind, tp.topic, str(tp.partition))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner):
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._close(list(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s assigned partitions %s", self._runner.name, sorted(tp.partition for tp in assigned))


def _record(raw: Any) -> Record:
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        key=raw.key,
        value=raw.value,
        timestamp_ms=raw.timestamp,
        headers=tuple(raw.headers or ()),
    )
