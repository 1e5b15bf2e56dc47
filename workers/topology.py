"""The map of the service: which topic feeds which consumer group and which steps.

::

    registry ──► POST /events/{distribution,harbor} ──► <prefix>.image-events.v1  (key: repository)
                                                              │
                 group <prefix>.inventory+triggers+replication ◄┘  (named after the kinds it runs)
                   each record goes to every flow; each flow batches, retries, dead-letters on its own
                   ├─ inventory:   decode_image_event → InventoryRecorder (artifacts + image_events)
                   ├─ triggers:    decode_image_event → TriggerMatcher (deliveries rows)
                   │    companion Deliverer: due deliveries → webhook POST / workload update
                   │      → attempt outcome, retry time (durable, per-target breaker)
                   └─ replication: decode_image_event → AutoSyncMatcher (replication_jobs rows)
                        companion JobRunner: due jobs (also manual/API) → copy_image → job status
                   → commit the offset every flow has finished

    scheduler (dispatch only) ──► <prefix>.commands.v1  (key: job; one per schedule slot)
                                                              │
                         group <prefix>.maintenance ◄─────────┘
                           decode_command → CommandRunner (sweep history, reconcile replication,
                             run replication and retention policies, mark slot done) → commit

    any step's invalid message ──► <prefix>.dead-letter.v1  (headers: reason, source offset)

Every consumer runs in ``ConsumerRunner`` (fetch once → each flow's decode → handle → commit,
commit last). Worker kinds are selected with ``registry-workers worker --kinds``; a process
running a subset (``--kinds triggers``) is its own group (``<prefix>.triggers``), so kinds can
run in separate Deployments and each still sees every record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from workers.config import Settings
from workers.db.engine import TRANSIENT_DB_ERRORS
from workers.db.models import ReplicationPolicy, RetentionPolicy
from workers.inventory.flow import InventoryRecorder, decode_image_event
from workers.maintenance.commands import (
    RECONCILE_REPLICATION,
    RUN_REPLICATION_POLICY,
    RUN_RETENTION,
    SWEEP_HISTORY,
    Command,
    CommandRunner,
    decode_command,
)
from workers.replication.clients import RegionClients
from workers.replication.errors import TransientRegistryError
from workers.replication.executions import ExecutionPlanner
from workers.replication.flow import AutoSyncMatcher
from workers.replication.policies import five_field_cron
from workers.replication.reconcile import Reconciler
from workers.replication.runner import JobRunner
from workers.replication.store import CheckpointStore
from workers.retention.runner import RetentionRunner
from workers.runtime.flow import Consumer, Flow
from workers.runtime.kafka import Topics
from workers.scheduler.dispatcher import Schedule
from workers.secrets import SecretBox
from workers.triggers.attempts import AttemptRunner
from workers.triggers.delivery import Deliverer
from workers.triggers.flow import TriggerMatcher
from workers.triggers.matching import PayloadContext


@dataclass(frozen=True)
class FlowDependencies:
    settings: Settings
    topics: Topics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Callable[[], datetime]
    secret_box: SecretBox


def inventory_flow(deps: FlowDependencies) -> Flow[Any]:
    return Flow(
        kind="inventory",
        topic=deps.topics.image_events,
        decode=decode_image_event,
        handle=InventoryRecorder(deps.engine, deps.clock),
        transient=TRANSIENT_DB_ERRORS,
        describe="records pushes, deletes and pulls into the artifacts inventory",
        concurrency=deps.settings.worker.inventory_concurrency,
    ).erased()


def maintenance_flow(deps: FlowDependencies) -> Flow[Any]:
    clients = RegionClients(deps.settings, deps.sessions, CheckpointStore(deps.sessions, deps.clock))
    reconciler = Reconciler(deps.sessions, clients, deps.settings.region, deps.clock)

    planner = ExecutionPlanner(deps.sessions, clients, deps.clock)

    retention = RetentionRunner(deps.sessions, deps.settings, clients, deps.clock)

    async def run_retention(command: Command) -> None:
        trigger, dry_run = str(command.params.get("trigger", "manual")), bool(command.params.get("dry_run", 0))
        apply_run = command.params.get("apply_run")
        await retention.run(
            int(command.params["policy_id"]),
            command.id,
            trigger,
            dry_run=dry_run,
            apply_run=int(apply_run) if apply_run else None,
        )

    async def run_policy(command: Command) -> None:
        execution = command.params.get("execution_id")
        await planner.run(int(command.params["policy_id"]), int(execution) if execution else None)

    async def reconcile(command: Command) -> None:
        namespace, repository = command.params.get("namespace"), command.params.get("repository")
        await reconciler.reconcile(
            namespace=str(namespace) if namespace else None, repository=str(repository) if repository else None
        )

    async def close_clients(stop: asyncio.Event) -> None:
        await stop.wait()
        await clients.close()

    return Flow(
        kind="maintenance",
        topic=deps.topics.commands,
        decode=decode_command,
        handle=CommandRunner(
            deps.sessions,
            deps.clock,
            {RECONCILE_REPLICATION: reconcile, RUN_REPLICATION_POLICY: run_policy, RUN_RETENTION: run_retention},
        ),
        transient=(*TRANSIENT_DB_ERRORS, TransientRegistryError),
        describe="applies scheduled and requested commands (history sweep, replication reconcile)",
        companion=close_clients,
        max_batch=1,  # a retention run may take minutes: commands of other partitions run beside it
        concurrency=8,
    ).erased()


def triggers_flow(deps: FlowDependencies) -> Flow[Any]:
    attempts = AttemptRunner(deps.sessions, deps.settings, deps.secret_box)
    deliverer = Deliverer(deps.sessions, deps.settings.triggers, attempts, deps.clock)
    context = PayloadContext(
        registry_host=_registry_host(deps.settings), source=f"/registry-workers/{deps.settings.region}"
    )
    return Flow(
        kind="triggers",
        topic=deps.topics.image_events,
        decode=decode_image_event,
        handle=TriggerMatcher(deps.sessions, deliverer, context, deps.clock),
        transient=TRANSIENT_DB_ERRORS,
        describe="records the deployment and webhook deliveries a push, delete or pull causes",
        companion=deliverer.run,
    ).erased()


def replication_flow(deps: FlowDependencies) -> Flow[Any]:
    clients = RegionClients(deps.settings, deps.sessions, CheckpointStore(deps.sessions, deps.clock))
    runner = JobRunner(
        deps.sessions,
        deps.settings,
        clients,
        deps.clock,
        concurrency=deps.settings.replication.concurrency,
        job_timeout_s=deps.settings.replication.job_timeout_s,
    )
    return Flow(
        kind="replication",
        topic=deps.topics.image_events,
        decode=decode_image_event,
        handle=AutoSyncMatcher(deps.sessions, runner, deps.settings.region, deps.clock),
        transient=TRANSIENT_DB_ERRORS,
        describe="queues automatic sync jobs for pushed tags; its runner copies images between regions",
        companion=runner.run,
    ).erased()


def _registry_host(settings: Settings) -> str:
    local = settings.local_registry()
    return urlsplit(local.registry).netloc if local else ""


FLOW_FACTORIES: dict[str, Callable[[FlowDependencies], Flow[Any]]] = {
    "inventory": inventory_flow,
    "maintenance": maintenance_flow,
    "triggers": triggers_flow,
    "replication": replication_flow,
}


def schedules(settings: Settings) -> list[Schedule]:
    """Every cron schedule the scheduler role fires."""

    def sweep(slot: str, at: datetime) -> Command:
        days: dict[str, int | str] = {"days": settings.history_retention_days}
        days["audit_days"] = settings.audit_retention_days  # the audit trail is swept with the history
        return Command(id=slot, kind=SWEEP_HISTORY, issued_at=at, params=days)

    def reconcile(slot: str, at: datetime) -> Command:
        return Command(id=slot, kind=RECONCILE_REPLICATION, issued_at=at, params={})

    return [
        Schedule(SWEEP_HISTORY, CronTrigger.from_crontab(settings.sweep_cron, timezone=UTC), sweep),
        Schedule(
            RECONCILE_REPLICATION,
            CronTrigger.from_crontab(settings.replication.reconcile_cron, timezone=UTC),
            reconcile,
        ),
    ]


async def stored_schedules(sessions: async_sessionmaker[AsyncSession]) -> list[Schedule]:
    """Schedules kept with policies: scheduled replication policies and retention policies."""
    async with sessions() as session:
        policies = await session.scalars(
            select(ReplicationPolicy).where(ReplicationPolicy.enabled, ReplicationPolicy.trigger_type == "scheduled")
        )
        schedules = [_policy_schedule(p) for p in policies if p.cron]
        retentions = await session.scalars(select(RetentionPolicy).where(RetentionPolicy.enabled))
        return schedules + [_retention_schedule(r) for r in retentions if r.cron]


def _retention_schedule(policy: RetentionPolicy) -> Schedule:
    def run(slot: str, at: datetime) -> Command:
        return Command(
            id=slot, kind=RUN_RETENTION, issued_at=at, params={"policy_id": policy.id, "trigger": "schedule"}
        )

    trigger = CronTrigger.from_crontab(five_field_cron(policy.cron), timezone=UTC)
    return Schedule(f"retention-policy-{policy.id}", trigger, run, not_before=policy.updated_at)


def _policy_schedule(policy: ReplicationPolicy) -> Schedule:
    job = f"replication-policy-{policy.id}"

    def run(slot: str, at: datetime) -> Command:
        return Command(id=slot, kind=RUN_REPLICATION_POLICY, issued_at=at, params={"policy_id": policy.id})

    trigger = CronTrigger.from_crontab(five_field_cron(policy.cron), timezone=UTC)
    return Schedule(job, trigger, run, not_before=policy.updated_at)


WORKER_KINDS: tuple[str, ...] = tuple(FLOW_FACTORIES)


def build_flows(deps: FlowDependencies, kinds: Sequence[str] | None = None) -> list[Flow[Any]]:
    """The flows of the selected worker kinds (all when ``kinds`` is empty), in ``WORKER_KINDS`` order."""
    selected = set(kinds) if kinds else set(WORKER_KINDS)
    unknown = sorted(selected - set(WORKER_KINDS))
    if unknown:
        raise ValueError(f"unknown worker kind(s) {', '.join(unknown)}; known: {', '.join(WORKER_KINDS)}")
    return [FLOW_FACTORIES[kind](deps) for kind in WORKER_KINDS if kind in selected]


def build_consumers(flows: Sequence[Flow[Any]], topic_prefix: str) -> list[Consumer]:
    """One consumer group per topic for the selected flows of that topic.

    The group is named after the kinds it runs (``<prefix>.inventory+triggers+replication``
    when a worker runs every kind), so processes running the same kinds share the work, and
    processes running other kinds (separate Deployments) get every record too.
    """
    by_topic: dict[str, list[Flow[Any]]] = {}
    for flow in flows:
        by_topic.setdefault(flow.topic, []).append(flow)
    return [
        Consumer(topic, consumer_group(topic_prefix, [flow.kind for flow in chosen]), tuple(chosen))
        for topic, chosen in by_topic.items()
    ]


def consumer_group(topic_prefix: str, kinds: Sequence[str]) -> str:
    return f"{topic_prefix}.{'+'.join(kind for kind in WORKER_KINDS if kind in kinds)}"
