"""The audit trail: every management call, and the actions workers take on their own.

Writes are one INSERT in the caller's transaction (``record_api_call`` from the API's audit
middleware; ``record_system_action`` where a trigger delivery or an image copy reaches a final
state), so auditing adds no round trip of its own to the event path. Rows are kept
``audit_retention_days`` and deleted by the history sweep (``sweep_audit``). Read them with
``GET /v3/iam/audit`` or ``registry-workers audit list``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import AuditEvent

SYSTEM = "system"
TRIGGER_FIRED = "system:trigger:fired"  # a deployment trigger or webhook delivery ended
IMAGE_SYNCED = "system:image:synced"  # a replication job (copy or deletion) ended
TAG_DELETED = "system:tag:deleted"  # retention deleted a digest (with its tags)
IMAGE_RESTORED = "system:image:restored"  # a retention deletion was undone
MAX_LIMIT = 1000
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_LIMITS = {
    "request_id": 64,
    "method": 8,
    "route": 512,
    "path": 2048,
    "principal": 255,
    "principal_id": 64,
    "access_key": 64,
    "action": 128,
    "resource": 1024,
    "source_ip": 64,
    "decision": 16,
}


@dataclass(frozen=True)
class ApiCall:
    """One management call as the audit middleware saw it."""

    request_id: str
    method: str
    route: str
    path: str
    principal: str
    principal_id: str
    access_key: str
    action: str
    resource: str
    source_ip: str
    status: int
    decision: str
    detail: str = ""


async def record_api_call(session: AsyncSession, call: ApiCall, now: datetime) -> None:
    """One INSERT; the caller commits."""
    await session.execute(insert(AuditEvent).values(_fitted({**asdict(call), "kind": "api", "occurred_at": now})))


async def record_system_action(
    session: AsyncSession, action: str, resource: str, detail: str, *, now: datetime | None = None
) -> None:
    """Record an action a worker took (``TRIGGER_FIRED``, ``IMAGE_SYNCED``): one INSERT, the caller commits."""
    await session.execute(insert(AuditEvent).values(system_action_row(action, resource, detail, now)))


async def record_system_actions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Several ``system_action_row``s in one executemany INSERT; the caller commits."""
    if rows:
        await session.execute(insert(AuditEvent), rows)


def system_action_row(action: str, resource: str, detail: str, now: datetime | None = None) -> dict[str, Any]:
    values = {
        "kind": SYSTEM,
        "occurred_at": now or datetime.now(UTC),
        "request_id": "",
        "method": "",
        "route": "",
        "path": "",
        "principal": SYSTEM,
        "principal_id": SYSTEM,
        "access_key": "",
        "action": action,
        "resource": resource,
        "source_ip": "",
        "status": None,
        "decision": "",
        "detail": detail,
    }
    return _fitted(values)


async def list_audit(
    session: AsyncSession,
    *,
    principal: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first. ``principal`` matches a user name, user id or access key; ``action`` may use ``*``."""
    query = select(AuditEvent)
    if principal:
        query = query.where(
            or_(
                AuditEvent.principal == principal,
                AuditEvent.principal_id == principal,
                AuditEvent.access_key == principal,
            )
        )
    if action and "*" in action:
        escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        query = query.where(AuditEvent.action.like(escaped, escape="\\"))
    elif action:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    query = query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).offset(offset).limit(limit)
    return [audit_document(row) for row in await session.scalars(query)]


async def sweep_audit(session: AsyncSession, older_than: datetime) -> int:
    """Delete audit rows recorded before ``older_than``; returns the row count."""
    result = await session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


def parse_since(text: str, now: datetime) -> datetime:
    """ISO 8601 (no offset means UTC) or an age such as ``30m``, ``2h``, ``7d``; raises ``ValueError``."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: expected an ISO 8601 time or an age such as 30m, 2h, 7d; got {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def audit_document(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "time": row.occurred_at.isoformat().replace("+00:00", "Z"),
        "kind": row.kind,
        "request_id": row.request_id,
        "method": row.method,
        "route": row.route,
        "path": row.path,
        "principal": row.principal,
        "principal_id": row.principal_id,
        "access_key": row.access_key,
        "action": row.action,
        "resource": row.resource,
        "source_ip": row.source_ip,
        "status": row.status,
        "decision": row.decision,
        "detail": row.detail,
    }


def _fitted(values: dict[str, Any]) -> dict[str, Any]:
    """Strings cut to their column's length: an over-long path must not lose the audit row."""
    return {
        key: value[: _LIMITS[key]] if key in _LIMITS and isinstance(value, str) else value
        for key, value in values.items()
    }
