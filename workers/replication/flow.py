"""The replication worker: pushes (and deletes) → sync/policy jobs queued → runner woken → commit.

Queuing happens in the consumer's batch (one transaction, keyed so a redelivered event
queues nothing); the copies run in the ``JobRunner`` companion, off the poll loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db import versions
from workers.db.models import ReplicationPolicy, SyncRule
from workers.events.model import ImageEvent
from workers.replication.executions import region_of, registry_ids, start_execution
from workers.replication.matching import AutoSyncRule, EventPolicy, plan_auto_sync, plan_policy_events
from workers.replication.policies import PolicyError, parse_filters
from workers.replication.runner import JobRunner
from workers.replication.store import JobRequest, queue_jobs


class ReplicationRuleCache:
    """Automatic sync rules and event-based policies, reloaded only when their version moved.

    The API bumps ``rule_versions['replication']`` with every change, so a batch costs one
    primary-key lookup — and no transaction at all when nothing matches.
    """

    def __init__(self, local_region: str) -> None:
        self._region = local_region
        self._version = -1
        self._rules: tuple[list[AutoSyncRule], list[EventPolicy]] = ([], [])

    async def rules(self, session: AsyncSession) -> tuple[list[AutoSyncRule], list[EventPolicy]]:
        version = await versions.current(session, versions.REPLICATION_RULES)
        if version != self._version:
            rows = await session.scalars(select(SyncRule).where(SyncRule.sync_auto))
            auto = [
                AutoSyncRule(r.id, r.namespace, r.repository, r.remote_region, r.remote_namespace, r.override)
                for r in rows
            ]
            self._rules = (auto, await _event_policies(session, self._region))
            self._version = version
        return self._rules


class AutoSyncMatcher:
    """Queues one job per automatic sync rule of each pushed repository, and event-based policy tasks."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        runner: JobRunner,
        local_region: str,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._runner = runner
        self._region = local_region
        self._clock = clock
        self._cache = ReplicationRuleCache(local_region)

    async def __call__(self, events: Sequence[ImageEvent]) -> None:
        async with self._sessions() as session:
            # Read-only and usually one primary-key lookup: no BEGIN/COMMIT round trips around it.
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            rules, policies = await self._cache.rules(session)
        namespaces = {event.namespace for event in events}
        auto_jobs = plan_auto_sync(events, [r for r in rules if r.namespace in namespaces], self._region)
        policy_jobs = plan_policy_events(events, policies, self._region)
        if not auto_jobs and not policy_jobs:
            return
        now = self._clock()
        async with self._sessions.begin() as session:
            created = await queue_jobs(session, auto_jobs, now)
            for policy_id, requests in policy_jobs.items():
                created += await _queue_execution(session, policy_id, requests, now)
        self._runner.wake(created)


async def _event_policies(session: AsyncSession, local_region: str) -> list[EventPolicy]:
    ids = await registry_ids(session, [local_region])
    rows = await session.scalars(
        select(ReplicationPolicy).where(
            ReplicationPolicy.enabled,
            ReplicationPolicy.trigger_type == "event_based",
            ReplicationPolicy.src_registry_id == ids[local_region],
        )
    )
    policies = []
    for row in rows:
        remote = await region_of(session, row.dest_registry_id)
        if remote is None:
            continue
        try:
            filters = parse_filters(row.filters)
        except PolicyError:
            continue
        policies.append(
            EventPolicy(row.id, row.name, filters, remote, row.dest_namespace, row.override, row.replicate_deletion)
        )
    return policies


async def _queue_execution(
    session: AsyncSession, policy_id: int, requests: list[JobRequest], now: datetime
) -> list[int]:
    """One event-based execution for this batch's tasks of the policy (none if all were queued before)."""
    execution = await start_execution(session, policy_id, "event_based", now)
    execution.enumerated, execution.status_text = True, "event based"
    created = await queue_jobs(session, [replace(r, execution_id=execution.id) for r in requests], now)
    if not created:
        await session.delete(execution)  # a redelivered batch: its tasks exist already
    return created
