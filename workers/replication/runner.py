"""The replication job runner: copies run here, never inside the Kafka poll loop.

New jobs are handed over by the matcher or the API (``wake``) or found by polling the
database every second; each runs ``copy_image`` with progress written back every few
seconds (which also extends the lease, so a 1 GB blob never loses its job to another worker).
Transient registry errors are retried with backoff; a job over its deadline ends ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers import metrics
from workers.config import Settings
from workers.db.engine import TRANSIENT_DB_ERRORS
from workers.db.models import ReplicationJob
from workers.iam.audit import IMAGE_SYNCED, record_system_action
from workers.logs import context_with
from workers.replication import store
from workers.replication.clients import RegionClients
from workers.replication.copy import CopyProgress, CopyResult, copy_image
from workers.replication.errors import RegistryError, TransientRegistryError

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
PROGRESS_INTERVAL_S = 2.0
MAX_ATTEMPTS = 5
RETRY_DELAYS_S = (2.0, 10.0, 30.0, 120.0)


class JobRunner:
    """Claims due replication jobs and runs them, at most ``concurrency`` at a time."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        clients: RegionClients,
        clock: Callable[[], datetime],
        *,
        concurrency: int = 4,
        job_timeout_s: float = 3600.0,
    ):
        self._sessions = sessions
        self._settings = settings
        self._clients = clients
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._timeout_s = job_timeout_s
        self._lease = timedelta(seconds=settings.replication.lease_s)
        self._woken: asyncio.Queue[list[int]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self, job_ids: list[int]) -> None:
        if job_ids:
            self._woken.put_nowait(job_ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; running copies are then cancelled (their leases expire, they resume)."""
        try:
            while not stop.is_set():
                ids = await self._next_wakeup(stop)
                with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                    await self._claim_and_start(ids)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._clients.close()

    async def _next_wakeup(self, stop: asyncio.Event) -> list[int] | None:
        getter = asyncio.ensure_future(self._woken.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, timeout=POLL_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def _claim_and_start(self, ids: list[int] | None) -> None:
        free = self._concurrency - len(self._tasks)
        if free <= 0:
            return
        async with self._sessions() as session:
            claimed = await store.claim_jobs(session, self._clock(), self._lease, free, ids)
        for job in claimed:
            # The job's task carries it in its log context: every line it logs (uploads too) says which.
            fields = context_with(
                event_id=_event_id(job), repository=f"{job.namespace}/{job.repository}", execution_id=job.id
            )
            task = asyncio.create_task(self._run_job(job), name=f"replication-{job.id}", context=fields)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job: ReplicationJob) -> None:
        async with self._slots:
            started = time.monotonic()
            try:
                if job.operation == "delete":
                    await self._finish(job, store.SUCCESS, {"detail": await self._delete(job)})
                    return
                result = await asyncio.wait_for(self._copy(job), self._timeout_s)
            except TimeoutError:
                await self._finish(job, store.TIMEOUT, {"detail": f"did not finish within {self._timeout_s:g} s"})
            except TransientRegistryError as exc:
                await self._retry_or_fail(job, f"{type(exc).__name__}: {exc}")
            except (RegistryError, ValueError) as exc:
                await self._finish(job, store.FAILED, {"detail": f"{type(exc).__name__}: {exc}"})
            except asyncio.CancelledError:
                raise  # shutting down: the lease expires and another pass resumes the copy
            except Exception as exc:  # never leave a job running forever
                log.exception("replication job %s failed unexpectedly", job.id)
                await self._finish(job, store.FAILED, {"detail": f"internal error: {type(exc).__name__}"})
            else:
                _count_copied(result)
                await self._finish(job, _status(result), _counters(result, time.monotonic() - started))

    async def _copy(self, job: ReplicationJob) -> CopyResult:
        source, destination = self._clients.pair(job.source_region, job.remote_region)
        reporter = _ProgressReporter(self._sessions, job.id, self._clock, self._lease)
        await store.record_progress(self._sessions, job.id, {"started_at": self._clock()}, self._clock(), self._lease)
        try:
            return await copy_image(
                source,
                f"{job.namespace}/{job.repository}",
                job.tag,
                destination,
                f"{job.remote_namespace}/{job.repository}",
                job.tag,
                override=job.override,
                resume=self._clients.checkpoints,
                progress=reporter.report,
            )
        finally:
            await reporter.flush()

    async def _delete(self, job: ReplicationJob) -> str:
        """Replicate a deletion: remove the destination tag's manifest (copies are digest-exact)."""
        destination = self._clients.client(job.remote_region)
        repository = f"{job.remote_namespace}/{job.repository}"
        digest = job.digest or await destination.head_manifest(repository, job.tag)
        if digest is None or not await destination.delete_manifest(repository, digest):
            return f"{repository}:{job.tag} already absent"
        return f"deleted {repository}@{digest}"

    async def _retry_or_fail(self, job: ReplicationJob, detail: str) -> None:
        attempts = job.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            await self._finish(
                job, store.FAILED, {"attempts": attempts, "detail": f"gave up after {attempts}: {detail}"}
            )
            return
        delay = RETRY_DELAYS_S[min(attempts - 1, len(RETRY_DELAYS_S) - 1)]
        when = self._clock() + timedelta(seconds=delay)
        await self._finish(
            job,
            store.WAITING,
            {"attempts": attempts, "next_attempt_at": when, "detail": f"attempt {attempts} failed: {detail}; retrying"},
        )

    async def _finish(self, job: ReplicationJob, status: str, values: dict[str, Any]) -> None:
        audit = None
        if status in store.FINAL_STATES:  # the audit trail's "image synced", written with the outcome
            target = f"{job.remote_region}/{job.remote_namespace}/{job.repository}:{job.tag}"
            audit = functools.partial(
                record_system_action,
                action=IMAGE_SYNCED,
                resource=f"{job.namespace}/{job.repository}:{job.tag}",
                detail=f"job {job.id} {job.operation} → {target}: {status}: {values.get('detail', '')}"[:4000],
            )
        await store.finish_job(self._sessions, job.id, status, values, self._clock(), also=audit)
        outcome = status if status in store.FINAL_STATES else "retry_scheduled"
        metrics.REPLICATION_JOBS.labels(job.operation, outcome).inc()
        if status in store.FINAL_STATES:
            log.info(
                "replication job %s %s/%s:%s → %s: %s",
                job.id,
                job.namespace,
                job.repository,
                job.tag,
                job.remote_region,
                status,
            )


class _ProgressReporter:
    """Writes progress at most every ``PROGRESS_INTERVAL_S`` (and extends the job's lease)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], job_id: int, clock: Callable[[], datetime], lease: timedelta
    ):
        self._sessions, self._job_id, self._clock, self._lease = sessions, job_id, clock, lease
        self._latest: CopyProgress | None = None
        self._written_at = time.monotonic()
        self._pending: asyncio.Task[bool] | None = None

    def report(self, progress: CopyProgress) -> None:
        self._latest = progress
        if time.monotonic() - self._written_at >= PROGRESS_INTERVAL_S and (
            self._pending is None or self._pending.done()
        ):
            self._written_at = time.monotonic()
            self._pending = asyncio.ensure_future(self._write(progress))

    async def flush(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                await self._pending

    async def _write(self, progress: CopyProgress) -> bool:
        values = {"bytes_done": progress.bytes_done, "bytes_total": progress.bytes_total}
        return await store.record_progress(self._sessions, self._job_id, values, self._clock(), self._lease)


def _event_id(job: ReplicationJob) -> str | None:
    """The image event an event-driven job copies for (keys ``auto:{rule}:{event}``, ``policy:{id}:{event}``)."""
    kind, _, rest = job.key.partition(":")
    return (rest.partition(":")[2] or None) if kind in ("auto", "policy") else None


def _count_copied(result: CopyResult) -> None:
    metrics.REPLICATION_BYTES.inc(result.bytes_transferred)
    metrics.REPLICATION_BLOBS.labels("copied").inc(result.blobs_copied)
    metrics.REPLICATION_BLOBS.labels("skipped").inc(result.blobs_skipped)
    metrics.REPLICATION_BLOBS.labels("mounted").inc(result.blobs_mounted)


def _status(result: CopyResult) -> str:
    return store.EXISTED if result.status == "existed" else store.SUCCESS


def _counters(result: CopyResult, elapsed_s: float) -> dict[str, Any]:
    detail = (
        f"{result.bytes_transferred} bytes in {elapsed_s:.1f} s; blobs copied {result.blobs_copied}, "
        f"skipped {result.blobs_skipped}, mounted {result.blobs_mounted}"
    )
    if result.status == "existed":
        detail = "the destination tag exists with a different digest and override is off"
    return {
        "digest": result.digest,
        "bytes_done": result.bytes_transferred,
        "blobs_copied": result.blobs_copied,
        "blobs_skipped": result.blobs_skipped,
        "blobs_mounted": result.blobs_mounted,
        "detail": detail,
    }
