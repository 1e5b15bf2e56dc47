"""Reconciliation: compare source and destination tags of every sync rule and repair drift.

Events can be missed (a registry restarted with notifications queued in memory), images can
predate the rule, a region can be added later. Reconcile reads both registries — never the
inventory, which only knows what events said — and queues an ordinary ``reconcile`` job for
every tag the destination lacks or holds at another digest (when the rule overrides).

``plan_repairs`` is the pure decision; ``Reconciler`` does the reading and queuing. Runs on the
scheduler's ``replication.reconcile_cron`` and on demand (API, CLI).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import ReplicationJob, SyncRule
from workers.replication import store
from workers.replication.clients import RegionClients
from workers.replication.errors import NotFound, RegistryError
from workers.replication.registry import RegistryClient

log = logging.getLogger(__name__)

HEAD_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Repair:
    tag: str
    digest: str
    reason: str  # "missing" | "differs"


@dataclass(frozen=True, slots=True)
class Drift:
    repairs: tuple[Repair, ...]
    left_alone: tuple[str, ...]  # tags that differ while override is off


def plan_repairs(source: Mapping[str, str], destination: Mapping[str, str], *, override: bool) -> Drift:
    """Tags to copy so the destination holds every source tag at the source digest. Pure."""
    repairs, left_alone = [], []
    for tag in sorted(source):
        digest, current = source[tag], destination.get(tag)
        if current == digest:
            continue
        if current is None:
            repairs.append(Repair(tag, digest, "missing"))
        elif override:
            repairs.append(Repair(tag, digest, "differs"))
        else:
            left_alone.append(tag)
    return Drift(tuple(repairs), tuple(left_alone))


@dataclass
class ReconcileReport:
    rules: int = 0
    queued: list[int] = field(default_factory=list)
    left_alone: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.rules} rule(s) checked, {len(self.queued)} repair job(s) queued, {self.left_alone} tag(s) differ"
        return text + (f"; errors: {'; '.join(self.errors)}" if self.errors else "")


class Reconciler:
    """Reads tags on both sides of each rule and queues repair jobs; may take a while per repository."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clients: RegionClients,
        local_region: str,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._clients = clients
        self._region = local_region
        self._clock = clock

    async def reconcile(self, *, namespace: str | None = None, repository: str | None = None) -> ReconcileReport:
        query = select(SyncRule)
        if namespace is not None:
            query = query.where(SyncRule.namespace == namespace)
        if repository is not None:
            query = query.where(SyncRule.repository == repository)
        async with self._sessions() as session:
            rules = list((await session.scalars(query.order_by(SyncRule.id))).all())
        report = ReconcileReport(rules=len(rules))
        run = uuid.uuid4().hex[:12]
        for rule in rules:
            try:
                await self._reconcile_rule(rule, run, report)
            except (RegistryError, ValueError, OSError) as exc:
                report.errors.append(f"{rule.namespace}/{rule.repository} → {rule.remote_region}: {exc}")
        log.info("reconcile %s: %s", run, report.describe())
        return report

    async def _reconcile_rule(self, rule: SyncRule, run: str, report: ReconcileReport) -> None:
        source, destination = self._clients.pair(self._region, rule.remote_region)
        source_tags = await tag_digests(source, f"{rule.namespace}/{rule.repository}")
        dest_tags = await tag_digests(destination, f"{rule.remote_namespace}/{rule.repository}")
        drift = plan_repairs(source_tags, dest_tags, override=rule.override)
        report.left_alone += len(drift.left_alone)
        async with self._sessions.begin() as session:
            busy = await _tags_in_flight(session, rule)
            requests = [
                store.JobRequest(
                    key=f"reconcile:{run}:{rule.id}:{repair.tag}", trigger="reconcile", source_region=self._region,
                    namespace=rule.namespace, repository=rule.repository, tag=repair.tag, digest=repair.digest,
                    remote_region=rule.remote_region, remote_namespace=rule.remote_namespace,
                    override=rule.override, rule_id=rule.id, operator_name=f"reconcile ({repair.reason})",
                )
                for repair in drift.repairs
                if repair.tag not in busy
            ]  # fmt: skip
            report.queued.extend(await store.queue_jobs(session, requests, self._clock()))


async def tag_digests(client: RegistryClient, repository: str) -> dict[str, str]:
    """Every tag of ``repository`` and the digest it points at (empty when the repository is unknown)."""
    try:
        tags = await client.list_tags(repository)
    except NotFound:
        return {}
    slots = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def head(tag: str) -> tuple[str, str | None]:
        async with slots:
            return tag, await client.head_manifest(repository, tag)

    pairs = await asyncio.gather(*(head(tag) for tag in tags))
    return {tag: digest for tag, digest in pairs if digest is not None}


async def _tags_in_flight(session: AsyncSession, rule: SyncRule) -> set[str]:
    rows = await session.scalars(
        select(ReplicationJob.tag).where(
            ReplicationJob.namespace == rule.namespace,
            ReplicationJob.repository == rule.repository,
            ReplicationJob.remote_region == rule.remote_region,
            ReplicationJob.remote_namespace == rule.remote_namespace,
            ReplicationJob.status.in_((store.WAITING, store.RUNNING)),
        )
    )
    return set(rows.all())
