"""Deliveries in the database: record what matched, claim what is due, write each outcome.

Every function takes the caller's ``AsyncSession`` and does not commit, except where its
docstring says so. Claims are leases: a worker that dies mid-attempt leaves a ``running`` row
whose lease expires, and any worker picks it up again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db import leases
from workers.db.models import Delivery, DeploymentTrigger, WebhookPolicy
from workers.db.upsert import insert_for
from workers.triggers.conditions import ConditionError, parse_condition
from workers.triggers.matching import PlannedDelivery, PolicyRule, TriggerRule, WebhookTarget
from workers.triggers.selectors import SelectorError, parse_scope_rules

log = logging.getLogger(__name__)

DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "pending", "running", "succeeded", "failed", "cancelled"
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})


async def load_rules(session: AsyncSession, namespaces: set[str] | None) -> tuple[list[TriggerRule], list[PolicyRule]]:
    """The enabled triggers and policies of ``namespaces`` (all when None), ready for ``plan_deliveries``."""
    trigger_query = select(DeploymentTrigger).where(DeploymentTrigger.enabled)
    policy_query = select(WebhookPolicy).where(WebhookPolicy.enabled)
    if namespaces is not None:
        trigger_query = trigger_query.where(DeploymentTrigger.namespace.in_(namespaces))
        policy_query = policy_query.where(WebhookPolicy.namespace.in_(namespaces))
    triggers = await session.scalars(trigger_query)
    policies = await session.scalars(policy_query)
    trigger_rules = [rule for t in triggers if (rule := trigger_rule(t)) is not None]
    policy_rules = [found for p in policies if (found := policy_rule(p)) is not None]
    return trigger_rules, policy_rules


def trigger_rule(trigger: DeploymentTrigger) -> TriggerRule | None:
    try:
        condition = parse_condition(trigger.trigger_type, trigger.condition)
    except ConditionError as exc:  # validated on save; only a hand-edited row gets here
        log.warning("trigger %s skipped: %s", trigger.id, exc)
        return None
    workload = (
        f"{trigger.cluster_id or trigger.cluster_name}/{trigger.cluster_ns}/{trigger.app_type}/{trigger.application}"
    )
    return TriggerRule(trigger.id, trigger.namespace, trigger.repository, condition, workload)


def policy_rule(policy: WebhookPolicy) -> PolicyRule | None:
    try:
        rules = parse_scope_rules(policy.scope_rules)
    except SelectorError as exc:
        log.warning("webhook policy %s skipped: %s", policy.id, exc)
        return None
    targets = tuple(
        WebhookTarget(index, str(t["address"]), str(t.get("type") or "http"))
        for index, t in enumerate(policy.targets)
        if not t.get("disabled_at")
    )
    return PolicyRule(policy.id, policy.namespace, frozenset(policy.event_types), rules, targets)


async def record_deliveries(
    session: AsyncSession, planned: Sequence[PlannedDelivery], now: datetime, *, lease: timedelta | None = None
) -> list[Delivery]:
    """Insert new deliveries, first attempt due now; returns the rows actually inserted.

    Keys already present (a redelivered event) are skipped by the unique constraint. With
    ``lease`` the rows are inserted ``running`` and leased to the caller, who attempts them
    at once (and whose lease expires if it dies).
    """
    if not planned:
        return []
    rows = {p.key: _delivery_row(p, now, lease) for p in planned}
    if session.get_bind().dialect.name == "postgresql":
        inserted = await _insert_unnest(session, list(rows.values()), now, lease)
        return [Delivery(id=delivery_id, **rows[key]) for delivery_id, key in inserted]
    stmt = (
        insert_for(session, DELIVERIES)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(DELIVERIES.c.id, DELIVERIES.c.key)  # not the payloads just sent
    )
    result = await session.execute(stmt, list(rows.values()))
    return [Delivery(id=row.id, **rows[row.key]) for row in result.all()]


# Postgres: one statement text whatever the number of rows (a VALUES list per row count would be
# a new prepared statement, and a new cache entry on every pooled connection, per batch size).
_VARYING = ("key", "kind", "trigger_id", "policy_id", "target_index", "target", "event_id", "event_type",
            "namespace", "repository", "tag", "digest", "payload", "content_type")  # fmt: skip
_INSERT_UNNEST = text(
    """
INSERT INTO deliveries (key, kind, trigger_id, policy_id, target_index, target, event_id, event_type, namespace,
                        repository, tag, digest, payload, content_type, status, attempts, next_attempt_at,
                        lease_until, last_status_code, latency_ms, detail, rolled_back_to, created_at, updated_at,
                        finished_at)
SELECT u.key, u.kind, u.trigger_id, u.policy_id, u.target_index, u.target, u.event_id, u.event_type, u.namespace,
       u.repository, u.tag, u.digest, u.payload, u.content_type, :status, 0, :now, :lease_until, NULL, NULL, '',
       NULL, :now, :now, NULL
FROM unnest(CAST(:key AS varchar[]), CAST(:kind AS varchar[]), CAST(:trigger_id AS bigint[]),
            CAST(:policy_id AS bigint[]), CAST(:target_index AS integer[]), CAST(:target AS varchar[]),
            CAST(:event_id AS varchar[]), CAST(:event_type AS varchar[]), CAST(:namespace AS varchar[]),
            CAST(:repository AS varchar[]), CAST(:tag AS varchar[]), CAST(:digest AS varchar[]),
            CAST(:payload AS text[]), CAST(:content_type AS varchar[]))
     AS u(key, kind, trigger_id, policy_id, target_index, target, event_id, event_type, namespace, repository, tag,
          digest, payload, content_type)
ON CONFLICT (key) DO NOTHING
RETURNING id, key
"""
)


async def _insert_unnest(
    session: AsyncSession, rows: list[dict[str, Any]], now: datetime, lease: timedelta | None
) -> list[tuple[int, str]]:
    params: dict[str, Any] = {column: [row[column] for row in rows] for column in _VARYING}
    params.update(status=rows[0]["status"], now=now, lease_until=None if lease is None else now + lease)
    result = await session.execute(_INSERT_UNNEST, params)
    return [(int(row.id), str(row.key)) for row in result.all()]


def _delivery_row(p: PlannedDelivery, now: datetime, lease: timedelta | None) -> dict[str, Any]:
    return {
        "key": p.key,
        "kind": p.kind,
        "trigger_id": p.trigger_id,
        "policy_id": p.policy_id,
        "target_index": p.target_index,
        "target": p.target,
        "event_id": p.event.id,
        "event_type": p.event_type,
        "namespace": p.event.namespace,
        "repository": p.event.repository,
        "tag": p.event.tag,
        "digest": p.event.digest,
        "payload": p.payload,
        "content_type": p.content_type,
        "status": PENDING if lease is None else RUNNING,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None if lease is None else now + lease,
        "last_status_code": None,
        "latency_ms": None,
        "detail": "",
        "rolled_back_to": None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
    }


async def claim_due(
    session: AsyncSession, now: datetime, lease: timedelta, limit: int, ids: Sequence[int] | None = None
) -> list[Delivery]:
    """Lease up to ``limit`` due rows (or exactly ``ids``, if due); see ``workers.db.leases``. Commits."""
    return await leases.claim_due(session, Delivery, PENDING, now, lease, limit, ids)


async def renew_leases(session: AsyncSession, ids: Sequence[int], until: datetime) -> None:
    """Keep deliveries in flight this worker's (their attempt or its outcome write is under way)."""
    await leases.renew(session, Delivery, ids, until)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt did, and what happens next (``next_attempt_at`` None: final)."""

    status: str  # PENDING (retry later) | SUCCEEDED | FAILED | CANCELLED
    detail: str
    status_code: int | None = None
    latency_ms: int | None = None
    next_attempt_at: datetime | None = None
    rolled_back_to: str | None = None
    counts_as_attempt: bool = True  # False when the breaker deferred it without trying


async def finish_attempt(session: AsyncSession, delivery_id: int, record: AttemptRecord, now: datetime) -> None:
    """Write an attempt's outcome and release the lease."""
    values: dict[str, Any] = {
        "status": record.status,
        "detail": record.detail[:4000],
        "lease_until": None,
        "next_attempt_at": record.next_attempt_at,
        "updated_at": now,
        "finished_at": now if record.status in FINAL_STATES else None,
    }
    if record.counts_as_attempt:
        values.update(
            attempts=Delivery.attempts + 1,
            last_status_code=record.status_code,
            latency_ms=record.latency_ms,
            rolled_back_to=record.rolled_back_to,
        )
    await session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))


async def finish_attempts(session: AsyncSession, outcomes: Sequence[tuple[int, AttemptRecord]], now: datetime) -> None:
    """``finish_attempt`` for many deliveries: one executemany UPDATE per kind of outcome.

    Rows are updated in ascending id order, the order every other writer locks them in.
    """
    ordered = sorted(outcomes, key=lambda outcome: outcome[0])
    counted = [(i, r) for i, r in ordered if r.counts_as_attempt]
    deferred = [(i, r) for i, r in ordered if not r.counts_as_attempt]
    common: dict[str, Any] = {
        "status": bindparam("b_status"),
        "detail": bindparam("b_detail"),
        "lease_until": None,
        "next_attempt_at": bindparam("b_next"),
        "updated_at": now,
        "finished_at": bindparam("b_finished"),
    }
    for rows, extra in (
        (
            counted,
            {
                "attempts": Delivery.attempts + 1,
                "last_status_code": bindparam("b_code"),
                "latency_ms": bindparam("b_latency"),
                "rolled_back_to": bindparam("b_rolled"),
            },
        ),
        (deferred, {}),
    ):
        if not rows:
            continue
        stmt = update(DELIVERIES).where(DELIVERIES.c.id == bindparam("b_id")).values(**common, **extra)
        params = [
            {
                "b_id": i,
                "b_status": r.status,
                "b_detail": r.detail[:4000],
                "b_next": r.next_attempt_at,
                "b_finished": now if r.status in FINAL_STATES else None,
                "b_code": r.status_code,
                "b_latency": r.latency_ms,
                "b_rolled": r.rolled_back_to,
            }
            for i, r in rows
        ]
        if not extra:
            params = [{k: v for k, v in p.items() if k not in ("b_code", "b_latency", "b_rolled")} for p in params]
        await session.execute(stmt, params)


async def replay(session: AsyncSession, delivery_id: int, now: datetime) -> bool:
    """Put a finished delivery back in the queue, due now, with its retry schedule restarted.

    The delivery keeps its id and key, so a webhook receiver sees the same ``webhook-id``.
    Returns False when there is no such delivery or it is still in flight.
    """
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status.in_(FINAL_STATES))
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            finished_at=None,
            updated_at=now,
            detail="replayed",
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def cancel_pending(
    session: AsyncSession,
    now: datetime,
    *,
    policy_id: int | None = None,
    target_index: int | None = None,
    trigger_id: int | None = None,
    reason: str,
) -> None:
    """Cancel queued deliveries of a removed trigger, policy or disabled target."""
    query = update(Delivery).where(Delivery.status == PENDING)
    if trigger_id is not None:
        query = query.where(Delivery.trigger_id == trigger_id)
    if policy_id is not None:
        query = query.where(Delivery.policy_id == policy_id)
    if target_index is not None:
        query = query.where(Delivery.target_index == target_index)
    await session.execute(query.values(status=CANCELLED, detail=reason, finished_at=now, updated_at=now))
