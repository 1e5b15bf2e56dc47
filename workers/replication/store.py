"""Replication jobs in the database: queue, lease, progress, outcome; upload checkpoints.

Same lease discipline as trigger deliveries: a job is claimed with a conditional UPDATE, a
worker that dies leaves an expired lease that any worker takes over, and final states
(``success``, ``failed``, ``timeout``, ``cancel``, ``existed``) are final.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db import leases
from workers.db.models import ReplicationJob, UploadCheckpoint
from workers.db.upsert import insert_for
from workers.replication.resume import ResumeKey
from workers.replication.uploads import UploadState

JOBS: Table = ReplicationJob.__table__  # type: ignore[assignment]
CHECKPOINTS: Table = UploadCheckpoint.__table__  # type: ignore[assignment]

WAITING, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCEL, EXISTED = (
    "waiting",
    "running",
    "success",
    "failed",
    "timeout",
    "cancel",
    "existed",
)
STATUSES = (WAITING, RUNNING, SUCCESS, FAILED, TIMEOUT, CANCEL, EXISTED)
FINAL_STATES = frozenset({SUCCESS, FAILED, TIMEOUT, CANCEL, EXISTED})


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A copy to queue: ``namespace/repository:tag`` of ``source_region`` to the remote side."""

    key: str
    trigger: str  # auto | manual | policy | reconcile
    source_region: str
    namespace: str
    repository: str
    tag: str
    remote_region: str
    remote_namespace: str
    override: bool
    digest: str | None = None
    rule_id: int | None = None
    execution_id: int | None = None
    policy_id: int | None = None
    operation: str = "copy"  # copy | delete
    operator_id: str = ""
    operator_name: str = ""


async def queue_jobs(session: AsyncSession, requests: Sequence[JobRequest], now: datetime) -> list[int]:
    """Insert jobs due now; keys already queued are skipped. Returns the new ids. Does not commit."""
    if not requests:
        return []
    rows = [_row(r, now) for r in {r.key: r for r in requests}.values()]
    stmt = insert_for(session, JOBS).on_conflict_do_nothing(index_elements=["key"]).returning(JOBS.c.id)
    return list((await session.execute(stmt, rows)).scalars().all())


def _row(r: JobRequest, now: datetime) -> dict[str, Any]:
    return {
        "key": r.key,
        "trigger": r.trigger,
        "operation": r.operation,
        "policy_id": r.policy_id,
        "rule_id": r.rule_id,
        "execution_id": r.execution_id,
        "source_region": r.source_region,
        "namespace": r.namespace,
        "repository": r.repository,
        "tag": r.tag,
        "digest": r.digest,
        "remote_region": r.remote_region,
        "remote_namespace": r.remote_namespace,
        "override": r.override,
        "status": WAITING,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "bytes_total": 0,
        "bytes_done": 0,
        "blobs_copied": 0,
        "blobs_skipped": 0,
        "blobs_mounted": 0,
        "detail": "",
        "operator_id": r.operator_id,
        "operator_name": r.operator_name,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
    }


async def claim_jobs(
    session: AsyncSession, now: datetime, lease: timedelta, limit: int, ids: Sequence[int] | None = None
) -> list[ReplicationJob]:
    """Lease up to ``limit`` due rows (or exactly ``ids``, if due); see ``workers.db.leases``. Commits."""
    return await leases.claim_due(session, ReplicationJob, WAITING, now, lease, limit, ids)


async def record_progress(
    sessions: async_sessionmaker[AsyncSession], job_id: int, values: dict[str, Any], now: datetime, lease: timedelta
) -> bool:
    """Store progress counters and extend the lease; False when the job was cancelled meanwhile."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(ReplicationJob)
            .where(ReplicationJob.id == job_id, ReplicationJob.status == RUNNING)
            .values(**values, lease_until=now + lease, updated_at=now)
        )
    return bool(getattr(result, "rowcount", 0))


async def finish_job(
    sessions: async_sessionmaker[AsyncSession],
    job_id: int,
    status: str,
    values: dict[str, Any],
    now: datetime,
    *,
    also: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> None:
    """Write the outcome (a final state, or ``waiting`` with ``next_attempt_at`` to retry).

    ``also`` runs in the same transaction (the runner's audit record of a final state).
    """
    async with sessions.begin() as session:
        if also is not None:
            await also(session)
        await session.execute(
            update(ReplicationJob)
            .where(ReplicationJob.id == job_id, ReplicationJob.status == RUNNING)
            .values(
                **values,
                status=status,
                lease_until=None,
                updated_at=now,
                finished_at=now if status in FINAL_STATES else None,
            )
        )


async def cancel_jobs(session: AsyncSession, now: datetime, *, execution_id: int) -> int:
    """Cancel the waiting and running jobs of an execution; running ones stop at their next checkpoint."""
    result = await session.execute(
        update(ReplicationJob)
        .where(ReplicationJob.execution_id == execution_id, ReplicationJob.status.in_((WAITING, RUNNING)))
        .values(status=CANCEL, detail="stopped", finished_at=now, updated_at=now, lease_until=None)
    )
    return int(getattr(result, "rowcount", 0))


class CheckpointStore:
    """The copy engine's ``ResumeStore``, backed by ``upload_checkpoints`` (survives restarts)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime]):
        self._sessions = sessions
        self._clock = clock

    async def get(self, key: ResumeKey) -> UploadState | None:
        async with self._sessions() as session:
            row = await session.get(UploadCheckpoint, key.as_text())
            return UploadState(row.location, row.offset) if row else None

    async def put(self, key: ResumeKey, state: UploadState) -> None:
        now = self._clock()
        async with self._sessions.begin() as session:
            stmt = insert_for(session, CHECKPOINTS).values(
                key=key.as_text(), location=state.location, offset=state.offset, updated_at=now
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["key"], set_={"location": state.location, "offset": state.offset, "updated_at": now}
                )
            )

    async def delete(self, key: ResumeKey) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(UploadCheckpoint).where(UploadCheckpoint.key == key.as_text()))
