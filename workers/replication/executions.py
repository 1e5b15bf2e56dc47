"""Executions of enterprise replication policies: enumerate, queue tasks, summarise.

An execution is started by the API (manual), the scheduler (scheduled) or an event
(event based). Enumeration reads the source registry (catalog, tags), selects with the
policy's filters and queues one ``replication_jobs`` row per tag — the execution's tasks —
which the job runner copies like any other job. An execution's status is derived from its
tasks, so it is never out of date: InProgress while enumerating or while tasks run, then
Failed if any task failed, else Succeed; Stopped once stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import ReplicationExecution, ReplicationJob, ReplicationPolicy, ReplicationRegistry
from workers.db.upsert import insert_for
from workers.replication import store
from workers.replication.clients import RegionClients
from workers.replication.errors import NotFound, RegistryError
from workers.replication.policies import PolicyError, parse_filters, select_tags

log = logging.getLogger(__name__)

REGISTRIES: Table = ReplicationRegistry.__table__  # type: ignore[assignment]


async def registry_ids(session: AsyncSession, regions: Sequence[str]) -> dict[str, int]:
    """The numeric registry id of every configured region, assigning new ids on first use."""
    existing = {r.region: r.id for r in (await session.scalars(select(ReplicationRegistry))).all()}
    missing = sorted(set(regions) - set(existing))
    if missing:  # ON CONFLICT: replicas assigning ids at the same moment agree on one row
        stmt = insert_for(session, REGISTRIES).on_conflict_do_nothing(index_elements=["region"])
        await session.execute(stmt, [{"region": region} for region in missing])
        existing = {r.region: r.id for r in (await session.scalars(select(ReplicationRegistry))).all()}
    return existing


async def region_of(session: AsyncSession, registry_id: int) -> str | None:
    row = await session.get(ReplicationRegistry, registry_id)
    return row.region if row else None


async def start_execution(session: AsyncSession, policy_id: int, trigger: str, now: datetime) -> ReplicationExecution:
    execution = ReplicationExecution(
        policy_id=policy_id,
        trigger=trigger,
        enumerated=False,
        stopped=False,
        status_text="enumerating",
        created_at=now,
        updated_at=now,
    )
    session.add(execution)
    await session.flush()
    return execution


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    status: str
    total: int
    failed: int
    succeed: int
    in_progress: int
    stopped: int


async def summarise(session: AsyncSession, executions: Sequence[ReplicationExecution]) -> dict[int, ExecutionSummary]:
    """Counts per execution from its tasks, in one grouped query."""
    ids = [e.id for e in executions]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    if ids:
        rows = await session.execute(
            select(ReplicationJob.execution_id, ReplicationJob.status, func.count())
            .where(ReplicationJob.execution_id.in_(ids))
            .group_by(ReplicationJob.execution_id, ReplicationJob.status)
        )
        for execution_id, status, count in rows.all():
            counts[execution_id][status] = count
    return {e.id: _summary(e, counts[e.id]) for e in executions}


def _summary(execution: ReplicationExecution, by_status: dict[str, int]) -> ExecutionSummary:
    failed = by_status.get(store.FAILED, 0) + by_status.get(store.TIMEOUT, 0)
    succeed = by_status.get(store.SUCCESS, 0) + by_status.get(store.EXISTED, 0)
    in_progress = by_status.get(store.WAITING, 0) + by_status.get(store.RUNNING, 0)
    stopped = by_status.get(store.CANCEL, 0)
    if execution.stopped:
        status = "Stopped"
    elif not execution.enumerated or in_progress:
        status = "InProgress"
    elif failed or execution.status_text.startswith("failed"):
        status = "Failed"
    else:
        status = "Succeed"
    return ExecutionSummary(status, sum(by_status.values()), failed, succeed, in_progress, stopped)


class ExecutionPlanner:
    """Enumerates a policy's source and queues its tasks. Called by the maintenance worker."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clients: RegionClients, clock: Callable[[], datetime]
    ):
        self._sessions = sessions
        self._clients = clients
        self._clock = clock

    async def run(self, policy_id: int, execution_id: int | None, trigger: str = "scheduled") -> None:
        async with self._sessions.begin() as session:
            policy = await session.get(ReplicationPolicy, policy_id)
            if policy is None or (execution_id is None and not policy.enabled):
                return
            if execution_id is None:
                execution_id = (await start_execution(session, policy_id, trigger, self._clock())).id
            execution = await session.get(ReplicationExecution, execution_id)
            if execution is None or execution.enumerated or execution.stopped:
                return  # a redelivered command: already done
            source = await region_of(session, policy.src_registry_id)
            destination = await region_of(session, policy.dest_registry_id)
        try:
            if source is None or destination is None:
                raise ValueError("the policy's source or destination registry is no longer configured")
            pairs = await self._enumerate(source, policy)
        except (RegistryError, ValueError, PolicyError, OSError) as exc:
            await self._mark(execution_id, f"failed: {exc}")
            return
        requests = [
            store.JobRequest(
                key=f"execution:{execution_id}:{name}:{tag}",
                trigger="policy",
                source_region=source,
                namespace=name.partition("/")[0],
                repository=name.partition("/")[2],
                tag=tag,
                remote_region=destination,
                remote_namespace=policy.dest_namespace or name.partition("/")[0],
                override=policy.override,
                execution_id=execution_id,
                policy_id=policy.id,
                operator_name=f"policy {policy.name}",
            )
            for name, tag in pairs
            if "/" in name
        ]
        async with self._sessions.begin() as session:
            await store.queue_jobs(session, requests, self._clock())
        await self._mark(execution_id, f"{len(requests)} task(s) queued")

    async def _enumerate(self, region: str, policy: ReplicationPolicy) -> list[tuple[str, str]]:
        filters = parse_filters(policy.filters)
        client = self._clients.client(region)
        repositories = []
        for name in await client.catalog():
            if not filters.repository_matches(name):
                continue
            try:
                repositories.append((name, await client.list_tags(name)))
            except NotFound:
                continue  # deleted between catalog and tags
        return select_tags(filters, repositories)

    async def _mark(self, execution_id: int, text: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(ReplicationExecution)
                .where(ReplicationExecution.id == execution_id)
                .values(enumerated=True, status_text=text, updated_at=self._clock())
            )
