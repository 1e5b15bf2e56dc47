"""One flow's share of a consumer: its lanes, its batches, decode → handle, retries, dead letters.

Every record the consumer fetches is queued to each of its flows' steps. A step keeps one
*lane* per partition; a batch takes the queued records of every lane that has no batch in
flight (up to ``max_batch``), so one transaction serves many partitions, and a lane is in at
most one batch at a time, so events of one repository (one key → one partition) are applied in
order. Up to ``concurrency`` batches run at once; while they run, the next batch gathers what
arrives (natural batching, no linger). A lane's ``done`` offset moves only after
``flow.handle`` returned, i.e. after the flow's effects and history are written.

Transient failures are retried with backoff (tenacity, named types only) while the batch's
lanes wait. A batch failing for another reason is split and retried message by message;
messages that still fail are dead-lettered with the reason: nothing blocks a partition and
nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from workers import metrics
from workers.config import WorkerSettings
from workers.db.engine import is_retryable_conflict
from workers.errors import InvalidMessage, TransientError
from workers.logs import log_context
from workers.runtime.deadletter import DeadLetters
from workers.runtime.flow import Flow, Record
from workers.runtime.producer import BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerOptions:
    max_batch: int
    max_buffered: int
    commit_interval_s: float
    drain_timeout_s: float
    concurrency: int  # batches in flight at once, per flow
    single_writer: bool = False  # SQLite: more batches at once would only queue on its lock

    @classmethod
    def from_settings(cls, worker: WorkerSettings, *, single_writer: bool) -> RunnerOptions:
        return cls(
            max_batch=worker.max_batch,
            max_buffered=worker.max_buffered_per_partition,
            commit_interval_s=worker.commit_interval_ms / 1000,
            drain_timeout_s=worker.drain_timeout_s,
            concurrency=worker.concurrency,
            single_writer=single_writer,
        )

    def for_flow(self, flow: Flow[Any]) -> RunnerOptions:
        """The flow's own batch size and concurrency where it sets them."""
        return replace(
            self,
            max_batch=min(self.max_batch, flow.max_batch or self.max_batch),
            concurrency=1 if self.single_writer else flow.concurrency or self.concurrency,
        )


class _Lane:
    """One partition's ordered queue, its batch in flight and the offset up to which work is done."""

    def __init__(self, tp: TopicPartition):
        self.tp = tp
        self.queue: deque[Record] = deque()
        self.done: int | None = None  # next offset to commit
        self.in_flight: _Batch | None = None
        self.closing = False

    def take(self, limit: int) -> list[Record]:
        queue = self.queue
        return [queue.popleft() for _ in range(min(limit, len(queue)))]


class _Batch:
    """Records of one or more lanes handled together; each lane's part keeps its offset order."""

    def __init__(self, parts: list[tuple[_Lane, list[Record]]]):
        self.parts = parts
        self.records = [record for _, records in parts for record in records]
        self.task: asyncio.Task[None] | None = None

    def settle(self) -> None:
        """The batch's effects and history are written: its lanes may commit and go on."""
        for lane, records in self.parts:
            lane.done = records[-1].offset + 1
            lane.in_flight = None

    def hand_back(self) -> None:
        """The batch was abandoned: lanes that stay assigned get their records back, in front."""
        for lane, records in self.parts:
            lane.in_flight = None
            if not lane.closing:
                lane.queue.extendleft(reversed(records))


class FlowStep:
    """Runs one flow over the records its consumer queues; ``run`` forms and starts batches."""

    def __init__(self, flow: Flow[Any], options: RunnerOptions, dead_letters: DeadLetters):
        self.flow = flow
        self._options = options.for_flow(flow)
        self._dead_letters = dead_letters
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._batches: set[_Batch] = set()
        self._work = asyncio.Event()  # records queued or a batch finished
        self._rotation = 0
        self._transient_types: tuple[type[BaseException], ...] = (TransientError, BrokerUnavailable, *flow.transient)
        self.failure: BaseException | None = None  # a batch that could neither be handled nor dead-lettered

    # -- what the consumer asks ---------------------------------------------------------------

    def queue(self, tp: TopicPartition, records: Sequence[Record]) -> int:
        """Queue ``records`` of ``tp``; returns how many of that partition are now waiting here."""
        lane = self._lanes.get(tp)
        if lane is None:
            lane = self._lanes[tp] = _Lane(tp)
        lane.queue.extend(records)
        self._work.set()
        return len(lane.queue)

    def waiting(self, tp: TopicPartition) -> int:
        lane = self._lanes.get(tp)
        return len(lane.queue) if lane else 0

    def done(self, tp: TopicPartition) -> int | None:
        """The offset up to which this flow has handled ``tp`` (None: nothing yet)."""
        lane = self._lanes.get(tp)
        return lane.done if lane else None

    def in_flight(self, tps: Iterable[TopicPartition]) -> set[asyncio.Task[None]]:
        """The batches holding records of ``tps``."""
        lanes = (self._lanes.get(tp) for tp in tps)
        return {lane.in_flight.task for lane in lanes if lane and lane.in_flight and lane.in_flight.task}

    def stop_taking(self, tps: Iterable[TopicPartition]) -> None:
        """Revoked: drop what is queued for ``tps``; their batches in flight may still finish."""
        for tp in tps:
            lane = self._lanes.get(tp)
            if lane is not None:
                lane.closing = True
                lane.queue.clear()

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._lanes.pop(tp, None)

    # -- forming batches ----------------------------------------------------------------------

    async def run(self) -> None:
        """Start batches while there is room and work; returns only when cancelled."""
        while True:
            self._work.clear()
            while len(self._batches) < self._options.concurrency:
                batch = self._next_batch()
                if batch is None:
                    break
                self._batches.add(batch)
                batch.task = asyncio.create_task(self._run_batch(batch), name=f"batch-{self.flow.kind}")
            await self._work.wait()

    def _next_batch(self) -> _Batch | None:
        """The queued records of idle lanes, up to ``max_batch``; lanes take turns at the front."""
        lanes = list(self._lanes.values())
        self._rotation = (self._rotation + 1) % max(1, len(lanes))
        room = self._options.max_batch
        parts: list[tuple[_Lane, list[Record]]] = []
        for lane in lanes[self._rotation :] + lanes[: self._rotation]:
            if lane.in_flight is None and lane.queue and not lane.closing:
                parts.append((lane, lane.take(room)))
                room -= len(parts[-1][1])
                if room == 0:
                    break
        if not parts:
            return None
        batch = _Batch(parts)
        for lane, _ in parts:
            lane.in_flight = batch
        return batch

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            await self._process(batch.records)
        except asyncio.CancelledError:
            batch.hand_back()
            raise
        except Exception as exc:  # e.g. a dead letter the broker refused for good: stop the flow
            self.failure = exc  # the consumer raises it; the batch's offsets are never committed
        else:
            batch.settle()
        finally:
            self._batches.discard(batch)
            self._work.set()

    # -- handling -----------------------------------------------------------------------------

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
