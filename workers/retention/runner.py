"""The retention shell: snapshot → plan (pure, ``plan.py``) → soft delete → delete → history.

Called by the maintenance worker for a ``run-retention`` command (after a policy is saved, on
its schedule, or on request). One query reads the snapshot of the policy's scope from the
inventory; protections come from the namespace's immutable tag rules and deployment history
(digests our triggers deployed, plus the previous ones per workload: the rollback window), the
blast-radius caps from the settings. Before a digest is deleted its exact manifest bytes and
tags go to ``retention_trash`` for the grace period, so ``restore`` can put them back while the
registry still has the blobs. Deletions run in batches of ``DELETE_BATCH`` (the batch's trash
rows in one transaction, committed before its first DELETE; its log rows in one after), with
bounded concurrency and a rate limit on DELETEs. A run's id is
deterministic per (policy, slot or request): a redelivered command does nothing twice. The
enterprise API creates the run ``pending`` before it publishes the command (the SDK answers the
execution's id); the worker claims that row instead of inserting its own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from workers import metrics
from workers.config import Settings
from workers.db.models import (
    Artifact,
    Delivery,
    ImmutableRule,
    RetentionLog,
    RetentionPolicy,
    RetentionRun,
    RetentionTrash,
    is_tag_row,
)
from workers.iam.audit import TAG_DELETED, record_system_actions, system_action_row
from workers.logs import bind_log_context, log_context
from workers.replication.clients import RegionClients
from workers.replication.errors import NotFound, RegistryError
from workers.replication.manifests import Manifest
from workers.retention.immutable import immutable_protections
from workers.retention.plan import DigestDecision, Limits, Plan, Protections, TagRow, plan_retention
from workers.retention.rules import RuleError, RuleSet, parse_basic_rules, parse_enterprise_rules
from workers.triggers.selectors import ScopeRule

log = logging.getLogger(__name__)

PENDING = "pending"  # created by the API so it can answer the execution's id; the worker claims it
RUNNING = "running"
DELETE_BATCH = 32  # digests per trash transaction and per log transaction


def policy_rules(policy: RetentionPolicy) -> RuleSet:
    if policy.edition == "basic":
        return parse_basic_rules(policy.algorithm, policy.rules)
    return parse_enterprise_rules(policy.rules)


async def load_snapshot(session: AsyncSession, region: str, namespace: str, repository: str | None) -> list[TagRow]:
    """Live tags of the scope with push and pull times, in one query (pull of tag or digest)."""
    tags, digests = aliased(Artifact), aliased(Artifact)
    query = (
        select(tags.repository, tags.tag, tags.digest, tags.pushed_at, tags.pulled_at, digests.pulled_at)
        .outerjoin(digests, and_(digests.region == tags.region, digests.name == tags.name, digests.ref == tags.digest))
        .where(tags.region == region, tags.namespace == namespace, is_tag_row(tags.tag), tags.deleted_at.is_(None))
    )
    if repository is not None:
        query = query.where(tags.repository == repository)
    rows = []
    for repo, tag, digest, pushed_at, tag_pull, digest_pull in (await session.execute(query)).all():
        if digest is None or pushed_at is None:
            continue
        pulls = [p for p in (tag_pull, digest_pull) if p is not None]
        rows.append(TagRow(repo, tag, digest, pushed_at, max(pulls) if pulls else None))
    return rows


async def deployed_digests(session: AsyncSession, namespace: str, window: int) -> frozenset[str]:
    """Digests deployed by our triggers in ``namespace``: the current and ``window`` previous per trigger."""
    ranked = (
        select(
            Delivery.digest,
            func.row_number().over(partition_by=Delivery.trigger_id, order_by=Delivery.id.desc()).label("rank"),
        )
        .where(Delivery.kind == "deployment", Delivery.status == "succeeded", Delivery.namespace == namespace)
        .subquery()
    )
    found = await session.scalars(select(ranked.c.digest).where(ranked.c.rank <= window + 1))
    return frozenset(d for d in found.all() if d)


async def immutable_rules(session: AsyncSession, namespace: str) -> tuple[ScopeRule, ...]:
    """The enabled immutable tag rules of ``namespace`` (validated when they were saved)."""
    stored = await session.scalars(select(ImmutableRule).where(ImmutableRule.namespace == namespace))
    return immutable_protections(
        {"tag_selectors": r.tag_selectors, "scope_selectors": r.scope_selectors, "disabled": r.disabled}
        for r in stored.all()
    )


class RetentionRunner:
    """Plans and applies retention runs; one per maintenance worker process."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        clients: RegionClients,
        clock: Callable[[], datetime],
    ):
        self._sessions = sessions
        self._settings = settings
        self._clients = clients
        self._clock = clock
        self._pace = _Pace(settings.retention.deletions_per_second)

    async def run(
        self, policy_id: int, key: str, trigger: str, *, dry_run: bool = False, apply_run: int | None = None
    ) -> int | None:
        """Plan (and unless ``dry_run`` apply) the policy; returns the run id (None: already ran).

        ``apply_run``: execute exactly the deletions that stored (dry-run) plan listed, minus any
        the rules no longer choose now (drift, reported in the run's detail).
        """
        with log_context(execution_id=key):  # the run's own id once it has one
            return await self._run(policy_id, key, trigger, dry_run=dry_run, apply_run=apply_run)

    async def _run(self, policy_id: int, key: str, trigger: str, *, dry_run: bool, apply_run: int | None) -> int | None:
        now = self._clock()
        async with self._sessions.begin() as session:
            policy = await session.get(RetentionPolicy, policy_id)
            if policy is None or (trigger != "manual" and not policy.enabled):
                await _close_pending(session, key, now, f"retention policy {policy_id} is gone or disabled")
                return None
            run = await _open_run(session, key, policy_id, trigger, dry_run, now)
            if run is None:
                return None  # this slot or request already ran
            bind_log_context(execution_id=run.id, repository=f"{policy.namespace}/{policy.repository or '*'}")
            plan = await self._plan(session, policy, now)
            drift = ""
            if apply_run is not None:
                plan, drift = await _restrict_to_stored(session, plan, apply_run)
            run.plan = [_decision_json(d) for d in plan.decisions]
            run.counts = plan.counts
        status, detail = await self._apply(run, policy, plan) if not dry_run else ("succeeded", "dry run")
        detail = f"{detail}; {drift}" if drift else detail
        if plan.aborted:
            status, detail = "aborted", str(plan.abort_reason)
        async with self._sessions.begin() as session:
            stored = await session.get(RetentionRun, run.id)
            assert stored is not None
            stored.status, stored.detail, stored.finished_at = status, detail, self._clock()
        metrics.RETENTION_EXECUTIONS.labels("dry_run" if dry_run else "apply", status).inc()
        log.info("retention run %s of policy %s: %s (%s)", run.id, policy_id, status, detail)
        return run.id

    async def _plan(self, session: AsyncSession, policy: RetentionPolicy, now: datetime) -> Plan:
        try:
            rules = policy_rules(policy)
        except RuleError as exc:  # validated on save; only a hand-edited row gets here
            raise ValueError(f"policy {policy.id}: {exc}") from None
        snapshot = await load_snapshot(session, self._settings.region, policy.namespace, policy.repository)
        in_use = await deployed_digests(session, policy.namespace, self._settings.retention.rollback_window)
        protections = Protections(immutable=await immutable_rules(session, policy.namespace), in_use=in_use)
        limits = Limits(self._settings.retention.max_deletions, self._settings.retention.max_percent)
        return plan_retention(snapshot, rules, protections, now, limits)

    async def _apply(self, run: RetentionRun, policy: RetentionPolicy, plan: Plan) -> tuple[str, str]:
        """Delete ``plan.deletions`` in batches: fetch the manifests, keep them in the trash (one
        transaction), delete them (paced), log what was deleted (one transaction). A batch's
        trash rows are committed before any of its deletions starts."""
        slots = asyncio.Semaphore(self._settings.retention.concurrency)
        deletions = plan.deletions
        failed: list[str] = []
        deleted = 0
        for start in range(0, len(deletions), DELETE_BATCH):
            batch = deletions[start : start + DELETE_BATCH]
            fetched = await asyncio.gather(*(self._fetch(slots, policy, d) for d in batch))
            failed += [outcome for _, outcome in fetched if isinstance(outcome, str)]
            found = [(decision, outcome) for decision, outcome in fetched if isinstance(outcome, Manifest)]
            await self._keep_in_trash(run, policy, found)
            outcomes = await asyncio.gather(*(self._delete(slots, policy, d) for d, _ in found))
            failed += [outcome for outcome in outcomes if isinstance(outcome, str)]
            done = [decision for (decision, _), outcome in zip(found, outcomes, strict=True) if outcome is True]
            await self._log(run, policy, done)
            deleted += len(done)
            metrics.RETENTION_DIGESTS_DELETED.inc(len(done))
            metrics.RETENTION_TAGS_DELETED.inc(sum(len(decision.tags) for decision in done))
        if failed:
            return "failed", f"deleted {deleted} digest(s); {len(failed)} failed: {failed[0]}"
        return "succeeded", f"deleted {deleted} digest(s)"

    async def _fetch(
        self, slots: asyncio.Semaphore, policy: RetentionPolicy, decision: DigestDecision
    ) -> tuple[DigestDecision, Manifest | str | None]:
        """The manifest to keep in the trash; None when it is already gone, or an error text."""
        name = f"{policy.namespace}/{decision.repository}"
        async with slots:
            try:
                return decision, await self._clients.client(self._settings.region).get_manifest(name, decision.digest)
            except NotFound:
                return decision, None
            except (RegistryError, OSError) as exc:
                return decision, f"{name}@{decision.digest}: {exc}"

    async def _delete(self, slots: asyncio.Semaphore, policy: RetentionPolicy, decision: DigestDecision) -> bool | str:
        """True when deleted, False when already gone, else an error text."""
        name = f"{policy.namespace}/{decision.repository}"
        async with slots:
            await self._pace.wait()
            try:
                return await self._clients.client(self._settings.region).delete_manifest(name, decision.digest)
            except (RegistryError, OSError) as exc:
                return f"{name}@{decision.digest}: {exc}"

    async def _keep_in_trash(
        self, run: RetentionRun, policy: RetentionPolicy, found: list[tuple[DigestDecision, Manifest]]
    ) -> None:
        if not found:
            return
        now = self._clock()
        expires_at = now + timedelta(days=self._settings.retention.grace_days)
        async with self._sessions.begin() as session:
            session.add_all(
                RetentionTrash(
                    run_id=run.id,
                    region=self._settings.region,
                    namespace=policy.namespace,
                    repository=decision.repository,
                    digest=decision.digest,
                    media_type=manifest.media_type,
                    manifest=base64.b64encode(manifest.raw).decode(),
                    tags=list(decision.tags),
                    deleted_at=now,
                    expires_at=expires_at,
                    restored_at=None,
                )
                for decision, manifest in found
            )

    async def _log(self, run: RetentionRun, policy: RetentionPolicy, done: list[DigestDecision]) -> None:
        if not done:
            return
        rule_type, now = _rule_type(policy), self._clock()
        async with self._sessions.begin() as session:
            session.add_all(
                RetentionLog(
                    retention_id=policy.id,
                    run_id=run.id,
                    namespace=policy.namespace,
                    repo=decision.repository,
                    tag=tag,
                    digest=decision.digest,
                    rule_type=rule_type,
                    created_at=now,
                )
                for decision in done
                for tag in decision.tags or ("",)
            )
            await record_system_actions(
                session,
                [
                    system_action_row(
                        TAG_DELETED,
                        f"{policy.namespace}/{d.repository}@{d.digest}",
                        f"retention policy {policy.id} run {run.id}: deleted tags {', '.join(d.tags) or '(none)'}",
                        now,
                    )
                    for d in done
                ],
            )


async def _open_run(
    session: AsyncSession, key: str, policy_id: int, trigger: str, dry_run: bool, now: datetime
) -> RetentionRun | None:
    """A new ``running`` row for ``key``, or the ``pending`` one the API created when it was
    asked for the execution's id; None when a run with this key already started.

    Insert first and claim on conflict: the API may insert its pending row at any moment.
    """
    run = RetentionRun(
        key=key,
        policy_id=policy_id,
        trigger=trigger,
        dry_run=dry_run,
        status=RUNNING,
        plan=[],
        counts={},
        detail="",
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(run)
        return run
    except IntegrityError:
        pass
    query = select(RetentionRun).where(RetentionRun.key == key, RetentionRun.status == PENDING)
    pending = await session.scalar(query.with_for_update())
    if pending is None:
        return None
    pending.status = RUNNING
    return pending


async def _close_pending(session: AsyncSession, key: str, now: datetime, detail: str) -> None:
    """A run the API announced for a policy that can no longer run ends ``failed``, not pending forever."""
    await session.execute(
        update(RetentionRun)
        .where(RetentionRun.key == key, RetentionRun.status == PENDING)
        .values(status="failed", detail=detail, finished_at=now)
    )


async def _restrict_to_stored(session: AsyncSession, plan: Plan, run_id: int) -> tuple[Plan, str]:
    """Keep only deletions the stored plan also listed; describe the drift between the two."""
    stored = await session.get(RetentionRun, run_id)
    if stored is None:
        raise ValueError(f"retention run {run_id} not found")
    planned = {(d["repository"], d["digest"]) for d in stored.plan if d["action"] == "delete"}
    current = {(d.repository, d.digest) for d in plan.would_delete}
    decisions = tuple(
        d
        if d.action == "keep" or (d.repository, d.digest) in planned
        else replace(d, action="keep", reasons=(*d.reasons, f"not in the plan of run {run_id}"))
        for d in plan.decisions
    )
    gone = len(planned - current)
    added = len(current - planned)
    drift = (
        f"applied the plan of run {run_id}; drift: {gone} planned deletion(s) no longer chosen, {added} new left alone"
    )
    return replace(plan, decisions=decisions), drift


def _rule_type(policy: RetentionPolicy) -> str:
    return ",".join(sorted({str(rule.get("template", "")) for rule in policy.rules})) or "rule"


def _decision_json(decision: DigestDecision) -> dict[str, Any]:
    return {
        "repository": decision.repository,
        "digest": decision.digest,
        "tags": list(decision.tags),
        "untagged": decision.untagged,
        "action": decision.action,
        "reasons": list(decision.reasons),
        "rules": list(decision.rules),
    }


class _Pace:
    """At most ``per_second`` starts per second (a registry's deletion rate limit)."""

    def __init__(self, per_second: float):
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            delay = self._next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = max(self._next, loop.time()) + self._interval
