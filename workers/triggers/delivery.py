"""The deliverer: runs due deliveries off the Kafka poll loop, each target isolated.

New deliveries are handed over by the matcher (``wake``) and attempted at once; retries come
back through the database (``next_attempt_at``), polled every second, so they survive
restarts and any replica may run them. Every target — a webhook origin or a cluster — has its
own concurrency limit and circuit breaker: a receiver that hangs for 10 s ties up only its
own slots, never the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from workers import metrics
from workers.config import TriggerSettings
from workers.db.engine import TRANSIENT_DB_ERRORS, is_retryable_conflict
from workers.db.models import Delivery
from workers.iam.audit import record_system_actions
from workers.logs import context_with
from workers.triggers import store
from workers.triggers.attempts import GAVE_UP, AttemptRunner, fired_row
from workers.triggers.retry import CircuitBreaker
from workers.triggers.store import AttemptRecord

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
CLAIM_BATCH = 200
MAX_IN_FLIGHT = 512
OUTCOME_BATCH_WAIT_S = 0.002


@dataclass
class _Outcome:
    delivery_id: int
    record: AttemptRecord
    delivery: Delivery | None
    done: asyncio.Future[None]


@dataclass
class TargetLane:
    """Concurrency limit and circuit breaker of one target."""

    slots: asyncio.Semaphore
    breaker: CircuitBreaker


class Deliverer:
    """Claims due deliveries and runs their attempts; one per worker process of kind ``triggers``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: TriggerSettings,
        attempts: AttemptRunner,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._settings = settings
        self._attempts = attempts
        self._clock = clock
        self._woken: asyncio.Queue[list[int]] = asyncio.Queue()
        self._lanes: dict[str, TargetLane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: list[_Outcome] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lease = timedelta(seconds=settings.lease_s)
        self._leased: set[int] = set()  # deliveries whose attempt or outcome write is under way here
        self._room = asyncio.Event()  # set whenever an attempt ends

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery stays this process's before another may take it over."""
        return self._lease

    def wake(self, delivery_ids: list[int]) -> None:
        """Claim and attempt these deliveries now (if due)."""
        if delivery_ids:
            self._woken.put_nowait(delivery_ids)

    async def wait_for_room(self) -> None:
        """Backpressure for the matcher: wait while ``MAX_IN_FLIGHT`` attempts are under way here.

        The consumer's batch then waits too, so a slow receiver leaves its backlog in Kafka
        (consumer lag) instead of in this process's memory.
        """
        while len(self._tasks) >= MAX_IN_FLIGHT:
            self._room.clear()
            await self._room.wait()

    def submit(self, deliveries: list[Delivery]) -> None:
        """Attempt deliveries already leased to this process (the matcher inserts them so)."""
        for delivery in deliveries:
            self._start(delivery)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: claim and start due work; then let attempts in flight finish (bounded)."""
        renewer = asyncio.create_task(self._renew_leases(), name="delivery-leases")
        try:
            while not stop.is_set():
                ids = await self._next_wakeup(stop)
                with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                    await self._claim_and_start(ids)
        finally:
            await self._drain()
            renewer.cancel()
            await self._attempts.close()

    async def _renew_leases(self) -> None:
        """Every third of the lease, extend it for everything in flight here (one statement)."""
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            if not self._leased:
                continue
            try:
                async with self._sessions.begin() as session:
                    await store.renew_leases(session, sorted(self._leased), self._clock() + self._lease)
            except TRANSIENT_DB_ERRORS as exc:  # the next renewal tries again; past the lease, another worker may
                log.warning("renewing %d delivery lease(s) failed: %r", len(self._leased), exc)

    async def _next_wakeup(self, stop: asyncio.Event) -> list[int] | None:
        """Ids handed over by the matcher, or None when it is time to poll the database."""
        getter = asyncio.ensure_future(self._woken.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, timeout=POLL_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def _claim_and_start(self, ids: list[int] | None) -> None:
        room = min(CLAIM_BATCH, MAX_IN_FLIGHT - len(self._tasks))
        if room <= 0:
            return  # busy: what is due waits for the next pass (leases keep it safe)
        async with self._sessions() as session:
            claimed = await store.claim_due(session, self._clock(), self._lease, room, ids)
        for delivery in claimed:
            self._start(delivery)

    def _start(self, delivery: Delivery) -> None:
        # The attempt's task carries the delivery in its log context: every line it logs says which.
        fields = context_with(
            event_id=delivery.event_id,
            repository=f"{delivery.namespace}/{delivery.repository}",
            execution_id=delivery.id,
        )
        task = asyncio.create_task(self._attempt(delivery), name=f"delivery-{delivery.id}", context=fields)
        self._tasks.add(task)
        self._leased.add(delivery.id)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._leased.discard(delivery.id))
        task.add_done_callback(lambda _: self._room.set())

    async def _attempt(self, delivery: Delivery) -> None:
        lane = self._lane(self._attempts.target_key(delivery))
        try:
            if not lane.breaker.allows(time.monotonic()):
                record = self._deferred_by_breaker(lane)
            else:
                async with lane.slots:
                    started = time.perf_counter()
                    record = await self._attempts.attempt(delivery, self._clock())
                    metrics.DELIVERY_SECONDS.labels(delivery.kind).observe(time.perf_counter() - started)
                self._observe(lane, record, delivery.kind)
        except Exception:
            # The lease expires and another pass retries; never lose the delivery.
            _record_failure(lane, delivery.kind)  # also ends a half-open probe
            log.exception("delivery %s: attempt failed unexpectedly", delivery.id)
            return
        try:
            await self._finish(delivery.id, record, delivery)
        except Exception:  # the target answered: not its failure; the lease expires and it runs again
            log.exception("delivery %s: writing the outcome failed", delivery.id)
            return
        _report(delivery, record)

    def _observe(self, lane: TargetLane, record: AttemptRecord, kind: str) -> None:
        """Every attempt reports to the breaker, so a half-open probe always ends."""
        if record.status in (store.SUCCEEDED, store.CANCELLED):  # cancelled: nothing was sent
            lane.breaker.record_success(time.monotonic())
        else:
            _record_failure(lane, kind)

    def _deferred_by_breaker(self, lane: TargetLane) -> AttemptRecord:
        now = time.monotonic()
        # While a half-open probe is in flight, retry_at is when it would be presumed lost (10 min);
        # it reports within the request timeout, so look again after one cooldown at most.
        wait_s = min(max(0.0, (lane.breaker.retry_at(now) or now) - now), self._settings.breaker_cooldown_s)
        wait_s += random.uniform(0, 1)
        return AttemptRecord(
            status=store.PENDING,
            detail=f"target circuit open after repeated failures; next try in {wait_s:.0f} s",
            next_attempt_at=self._clock() + timedelta(seconds=wait_s),
            counts_as_attempt=False,
        )

    async def _finish(self, delivery_id: int, record: AttemptRecord, delivery: Delivery | None = None) -> None:
        """Write the outcome (batched with others finishing at the same moment); then maybe re-wake."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append(_Outcome(delivery_id, record, delivery, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_outcomes(), name="delivery-outcomes")
        await done
        if record.status == store.PENDING and record.next_attempt_at is not None:
            delay = (record.next_attempt_at - self._clock()).total_seconds()
            if delay < POLL_INTERVAL_S:  # an immediate retry should not wait for the next poll
                asyncio.get_running_loop().call_later(max(delay, 0.0), self.wake, [delivery_id])

    async def _flush_outcomes(self) -> None:
        """One transaction for every outcome queued meanwhile: a commit per batch, not per delivery.

        A database outage is waited out (the request was sent: record it, do not send it again);
        the leases stay renewed meanwhile.
        """
        while self._outcomes:
            await asyncio.sleep(OUTCOME_BATCH_WAIT_S)  # let attempts finishing together join
            batch, self._outcomes = self._outcomes, []
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_outcome_write_may_retry),
                    wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
                    reraise=True,
                ):
                    with attempt:
                        await self._write_outcomes(batch)
            except Exception as exc:  # not transient: the leases expire and the attempts run again
                for outcome in batch:
                    outcome.done.set_exception(exc)
            else:
                for outcome in batch:
                    outcome.done.set_result(None)

    async def _write_outcomes(self, batch: list[_Outcome]) -> None:
        async with self._sessions.begin() as session:
            now = self._clock()
            await store.finish_attempts(session, [(o.delivery_id, o.record) for o in batch], now)
            audit = [fired_row(o.delivery, o.record) for o in batch if o.delivery is not None]
            await record_system_actions(session, [row for row in audit if row is not None])  # same commit

    def _lane(self, key: str) -> TargetLane:
        lane = self._lanes.get(key)
        if lane is None:
            breaker = CircuitBreaker(self._settings.breaker_failures, self._settings.breaker_cooldown_s)
            lane = TargetLane(asyncio.Semaphore(self._settings.concurrency_per_target), breaker)
            self._lanes[key] = lane
        return lane

    async def _drain(self, timeout_s: float = 10.0) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:  # their leases expire; another worker retries them
                task.cancel()


def _outcome_write_may_retry(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS) or is_retryable_conflict(exc)


def delivery_outcome(delivery: Delivery, record: AttemptRecord) -> str:
    """The ``outcome`` label of ``rw_trigger_deliveries_total`` for one attempt's record."""
    if record.status == store.SUCCEEDED:
        return "delivered"
    if record.status == store.CANCELLED:
        return "cancelled"
    if record.status == store.PENDING:
        return "retry_scheduled" if record.counts_as_attempt else "deferred"
    if delivery.kind == "webhook" and record.status_code == 410:
        return "disabled"
    return "dead_lettered" if record.detail.startswith(GAVE_UP) else "failed"


# Quiet when things work (the deliveries table and the audit trail keep every success).
_OUTCOME_LEVELS = {"delivered": logging.DEBUG, "deferred": logging.DEBUG, "retry_scheduled": logging.INFO}


def _report(delivery: Delivery, record: AttemptRecord) -> None:
    """Count and log an attempt's outcome once it is written (the task's log context names the delivery)."""
    outcome = delivery_outcome(delivery, record)
    metrics.DELIVERIES.labels(delivery.kind, outcome).inc()
    level = _OUTCOME_LEVELS.get(outcome, logging.WARNING if record.status == store.FAILED else logging.INFO)
    if log.isEnabledFor(level):
        log.log(level, "delivery %s (%s) %s: %s", delivery.id, delivery.kind, outcome, record.detail)


def _record_failure(lane: TargetLane, kind: str) -> None:
    """Report a failure to the lane's breaker; count it when that opens (or reopens) the circuit."""
    opened_until = lane.breaker.open_until
    lane.breaker.record_failure(time.monotonic())
    if lane.breaker.open_until != opened_until:
        metrics.BREAKER_OPENS.labels(kind).inc()
        log.warning("circuit of %s target opened for %g s", kind, lane.breaker.cooldown_s)
