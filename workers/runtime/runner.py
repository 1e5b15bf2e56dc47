"""Run one flow: poll Kafka, process each partition's batches in order, commit what is done.

Design (why it looks like this):

- One *lane* per assigned partition processes batches strictly in offset order, so events of
  one repository (one key → one partition) are applied in order. Lanes of different partitions
  run concurrently, up to ``concurrency`` batches at once.
- The poll loop never waits for work: a lane holding more than ``max_buffered`` records makes
  the loop ``pause`` that partition and keep polling, so the group never exceeds
  ``max_poll_interval_ms`` and never rebalances because of slow work (backpressure is a
  signal, not a sleep). The lane resumes the partition once it has drained half.
- A lane marks offsets done only after ``flow.handle`` returned, i.e. after effects and
  history are written; a committer commits done offsets. Commit is always the last step.
- Transient failures are retried with backoff (tenacity, named types only) while the lane's
  partition stays paused. A batch failing for another reason is split and retried message by
  message; messages that still fail are dead-lettered with the reason — nothing blocks a
  partition and nothing is dropped silently.
- On revocation a lane stops taking work, finishes its batch in flight (bounded), and its
  offsets are committed before the partition moves; queued records are simply redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from workers import metrics
from workers.config import KafkaSettings, WorkerSettings
from workers.db.engine import is_retryable_conflict
from workers.errors import InvalidMessage, TransientError
from workers.logs import log_context
from workers.runtime.deadletter import DeadLetters
from workers.runtime.flow import Flow, Record
from workers.runtime.kafka import consumer_options
from workers.runtime.producer import BrokerUnavailable

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RunnerOptions:
    max_batch: int
    max_buffered: int
    commit_interval_s: float
    drain_timeout_s: float
    concurrency: int

    @classmethod
    def from_settings(cls, worker: WorkerSettings, concurrency: int) -> RunnerOptions:
        return cls(
            max_batch=worker.max_batch,
            max_buffered=worker.max_buffered_per_partition,
            commit_interval_s=worker.commit_interval_ms / 1000,
            drain_timeout_s=worker.drain_timeout_s,
            concurrency=concurrency,
        )


class _Lane:
    """One partition's ordered work queue and the offset up to which work is done."""

    def __init__(self, tp: TopicPartition):
        self.tp = tp
        self.queue: deque[list[Record]] = deque()
        self.buffered = 0
        self.done: int | None = None  # next offset to commit
        self.committed: int | None = None
        self.wakeup = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None

    def take_batch(self, max_batch: int) -> list[Record]:
        batch: list[Record] = []
        while self.queue and (not batch or len(batch) + len(self.queue[0]) <= max_batch):
            batch.extend(self.queue.popleft())
        self.buffered -= len(batch)
        return batch


class ConsumerRunner:
    """Consumes ``flow.topic`` in group ``flow.group`` until ``stop`` is set, then drains."""

    def __init__(
        self,
        flow: Flow[Any],
        kafka: KafkaSettings,
        bootstrap: str,
        options: RunnerOptions,
        dead_letters: DeadLetters,
    ):
        self.flow = flow
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._options = options
        self._dead_letters = dead_letters
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._slots = asyncio.Semaphore(options.concurrency)
        self._consumer: AIOKafkaConsumer | None = None
        self._transient_types: tuple[type[BaseException], ...] = (TransientError, BrokerUnavailable, *flow.transient)

    async def run(self, stop: asyncio.Event) -> None:
        """Blocks until ``stop`` is set; drains and commits before returning."""
        consumer = AIOKafkaConsumer(**consumer_options(self._kafka, self._bootstrap, self.flow.group))
        consumer.subscribe([self.flow.topic], listener=_Rebalance(self))
        self._consumer = consumer
        stopped = asyncio.create_task(stop.wait())
        # start() and getmany() can block while the broker is down: stop must never wait for
        # them, so both race against the stop signal and are cancelled when it wins.
        starting = asyncio.create_task(consumer.start())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done() or starting.exception() is not None:
            starting.cancel()
            stopped.cancel()
            await asyncio.gather(starting, stopped, return_exceptions=True)
            await self._stop_consumer(consumer)
            if not starting.cancelled():
                starting.result()  # re-raise why the consumer could not start
            return
        committer = asyncio.create_task(self._commit_loop(stop), name=f"commit-{self.flow.kind}")
        poller = asyncio.create_task(self._poll(consumer, stop), name=f"poll-{self.flow.kind}")
        try:
            await asyncio.wait([poller, stopped], return_when=asyncio.FIRST_COMPLETED)
            if poller.done():
                poller.result()  # a lane or the consumer failed: surface it
        finally:
            for task in (poller, committer, stopped):
                task.cancel()
            await asyncio.gather(poller, committer, stopped, return_exceptions=True)
            await self._close_lanes(list(self._lanes))
            await self._stop_consumer(consumer)

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s consumer did not leave its group in time (broker unreachable?)", self.flow.kind)
        log.info("%s consumer stopped", self.flow.kind)

    async def _poll(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=self._options.max_batch)
            self._dispatch(fetched)
            self._resume_drained()
            self._observe_lag()
            self._raise_if_a_lane_died()

    # -- polling side -------------------------------------------------------------------------

    def _dispatch(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for tp, raw in fetched.items():
            if not raw or tp not in assigned:
                continue
            lane = self._lanes.get(tp) or self._open_lane(tp)
            lane.queue.append([_record(r) for r in raw])
            lane.buffered += len(raw)
            lane.wakeup.set()
            if lane.buffered >= self._options.max_buffered:
                self._consumer.pause(tp)

    def _resume_drained(self) -> None:
        assert self._consumer is not None
        paused = self._consumer.paused()
        for tp in paused:
            lane = self._lanes.get(tp)
            if lane is None or lane.buffered <= self._options.max_buffered // 2:
                self._consumer.resume(tp)

    def _observe_lag(self) -> None:
        assert self._consumer is not None
        for tp, lane in self._lanes.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and lane.done is not None:
                labels = (self.flow.kind, tp.topic, str(tp.partition))
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, highwater - lane.done))

    def _open_lane(self, tp: TopicPartition) -> _Lane:
        lane = _Lane(tp)
        lane.task = asyncio.create_task(self._run_lane(lane), name=f"lane-{self.flow.kind}-{tp.partition}")
        self._lanes[tp] = lane
        return lane

    # -- processing side ----------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                if lane.closing:
                    return
                lane.wakeup.clear()
                await lane.wakeup.wait()
                continue
            async with self._slots:
                batch = lane.take_batch(self._options.max_batch)
                await self._process(batch)
                lane.done = batch[-1].offset + 1

    async def _process(self, batch: Sequence[Record]) -> None:
        started = time.perf_counter()
        decoded: list[tuple[Record, Any]] = []
        for record in batch:
            try:
                decoded.append((record, self.flow.decode(record)))
            except InvalidMessage as exc:
                log.warning(
                    "%s message %d/%d dead-lettered: %s", self.flow.kind, record.partition, record.offset, exc.reason
                )
                await self._dead_letter(record, exc.reason)
        if decoded:
            try:
                await self._retrying(self.flow.handle, [message for _, message in decoded])
            except Exception as exc:  # not transient: isolate the poison message(s)
                log.warning("%s batch failed (%r); retrying one message at a time", self.flow.kind, exc)
                await self._process_one_by_one(decoded)
        now = time.time()
        metrics.PROCESSING_SECONDS.labels(self.flow.kind).observe(time.perf_counter() - started)
        metrics.EVENTS_CONSUMED.labels(self.flow.kind).inc(len(batch))
        latency = metrics.EVENT_LATENCY.labels(self.flow.kind)
        for record in batch:
            latency.observe(max(0.0, now - record.timestamp_ms / 1000))

    async def _process_one_by_one(self, decoded: Iterable[tuple[Record, Any]]) -> None:
        # The slow path after a failed batch: each message's log lines name its event (or command).
        for record, message in decoded:
            with log_context(event_id=getattr(message, "id", None), repository=getattr(message, "name", None)):
                try:
                    await self._retrying(self.flow.handle, [message])
                except Exception as exc:
                    log.exception("%s message %s/%d dead-lettered", self.flow.kind, record.partition, record.offset)
                    await self._dead_letter(record, f"{type(exc).__name__}: {exc}")

    async def _dead_letter(self, record: Record, reason: str) -> None:
        await self._retrying(self._dead_letters.send, record, self.flow.kind, reason)
        metrics.EVENTS_DEAD_LETTERED.labels(self.flow.kind).inc()

    async def _retrying(self, func: Any, *args: Any) -> None:
        try:  # the usual case, without building a retry loop per batch
            await func(*args)
            return
        except Exception as exc:
            if not self._transient(exc):
                raise
            metrics.RETRIES.labels(self.flow.kind).inc()
            log.warning("%s: transient failure (%r); retrying", self.flow.kind, exc)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(self._transient),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                await func(*args)

    def _transient(self, exc: BaseException) -> bool:
        """The flow's named transient errors, and conflicts Postgres asks to retry (deadlock, serialization)."""
        return isinstance(exc, self._transient_types) or is_retryable_conflict(exc)

    def _log_retry(self, state: Any) -> None:
        metrics.RETRIES.labels(self.flow.kind).inc()
        outcome = state.outcome.exception() if state.outcome else None
        log.warning("%s: transient failure (%r), attempt %d; retrying", self.flow.kind, outcome, state.attempt_number)

    # -- committing ---------------------------------------------------------------------------

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._options.commit_interval_s)
            await self._commit(list(self._lanes.values()))

    async def _commit(self, lanes: Sequence[_Lane]) -> None:
        offsets = {
            lane.tp: OffsetAndMetadata(lane.done, "")
            for lane in lanes
            if lane.done is not None and lane.done != lane.committed
        }
        if not offsets or self._consumer is None:
            return
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            # The work is done and idempotent; a later commit (or the next owner) catches up.
            log.warning("%s: commit of %d partition(s) failed: %r", self.flow.kind, len(offsets), exc)
            return
        for lane in lanes:
            if lane.tp in offsets:
                lane.committed = offsets[lane.tp].offset

    async def _close_lanes(self, tps: Sequence[TopicPartition]) -> None:
        """Stop taking work on ``tps``, finish what is in flight (bounded), commit it."""
        lanes = [self._lanes.pop(tp) for tp in tps if tp in self._lanes]
        for lane in lanes:
            lane.closing = True
            lane.queue.clear()
            lane.buffered = 0
            lane.wakeup.set()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._options.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%s: %d lane(s) did not drain in time; their batch is redelivered", self.flow.kind, len(pending)
                )
                await asyncio.wait(pending)
        await self._commit(lanes)
        for lane in lanes:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.flow.kind, lane.tp.topic, str(lane.tp.partition))

    def _raise_if_a_lane_died(self) -> None:
        for lane in self._lanes.values():
            if lane.task is not None and lane.task.done() and not lane.task.cancelled():
                error = lane.task.exception()
                if error is not None:
                    raise RuntimeError(f"{self.flow.kind} lane {lane.tp.partition} failed") from error


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner):
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._close_lanes(list(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s assigned partitions %s", self._runner.flow.kind, sorted(tp.partition for tp in assigned))


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
