"""Custom policies in the database, and attaching policies (custom or system) to users and groups.

Called by the ``/v3/iam`` API and the CLI inside a transaction they own; raises ``IamError``.
A document is validated with ``parse_policy`` before it is stored, so what is stored always
parses; the names of the system policies (``SWR FullAccess``, ...) are reserved.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import IamAttachment, IamPolicy
from workers.iam.policy import PolicyError, parse_policy
from workers.iam.principals import GROUP, USER, IamError, add_unique, find_group, find_user, iso
from workers.iam.system import SYSTEM_POLICIES, system_policy_document

POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,127}$")


def validate_document(document: object) -> dict[str, Any]:
    """``document`` if it is a valid policy; else ``IamError`` naming the field (``document.Statement[0]...``)."""
    try:
        parse_policy(document)
    except PolicyError as exc:
        where = "document" if exc.field == "<root>" else f"document.{exc.field}"
        raise IamError("invalid", f"{where}: {exc.message}") from None
    assert isinstance(document, dict)
    return document


async def create_policy(
    session: AsyncSession, name: object, description: str, document: object, now: datetime
) -> IamPolicy:
    if not isinstance(name, str) or not POLICY_NAME.match(name):
        raise IamError("invalid", f"name: expected 1-128 letters, digits, spaces or '_.:@-', got {name!r}")
    if name in SYSTEM_POLICIES:
        raise IamError("conflict", f"name: {name!r} is a system policy")
    policy = IamPolicy(
        name=name,
        description=description,
        document=validate_document(document),
        created_at=now,
        updated_at=now,
    )
    await add_unique(session, policy, f"policy {name!r} already exists")
    return policy


async def find_policy(session: AsyncSession, name: str) -> dict[str, Any]:
    """The policy called ``name`` as a document: a system policy or a custom one."""
    if name in SYSTEM_POLICIES:
        return system_document(name)
    policy = await session.scalar(select(IamPolicy).where(IamPolicy.name == name))
    if policy is None:
        raise IamError("not_found", f"policy {name!r} not found (system policies: {', '.join(SYSTEM_POLICIES)})")
    return policy_document(policy)


async def list_policies(session: AsyncSession) -> list[dict[str, Any]]:
    custom = await session.scalars(select(IamPolicy).order_by(IamPolicy.name))
    return [*(system_document(name) for name in SYSTEM_POLICIES), *map(policy_document, custom)]


async def delete_policy(session: AsyncSession, name: str) -> None:
    """Delete a custom policy and every attachment of it (system policies cannot be deleted)."""
    if name in SYSTEM_POLICIES:
        raise IamError("invalid", f"{name!r} is a system policy and cannot be deleted")
    policy = await session.scalar(select(IamPolicy).where(IamPolicy.name == name))
    if policy is None:
        raise IamError("not_found", f"policy {name!r} not found")
    await session.execute(delete(IamAttachment).where(IamAttachment.policy_name == name))
    await session.delete(policy)


async def attach(session: AsyncSession, principal_type: str, ref: str, policy_name: str, now: datetime) -> str:
    """Attach ``policy_name`` to the user or group ``ref`` (idempotent); returns the principal's name."""
    principal_id, principal_name = await _principal(session, principal_type, ref)
    await find_policy(session, policy_name)
    existing = await session.scalar(
        select(IamAttachment.id).where(*_attachment(principal_type, principal_id, policy_name))
    )
    if existing is None:
        session.add(
            IamAttachment(
                principal_type=principal_type, principal_id=principal_id, policy_name=policy_name, created_at=now
            )
        )
    return principal_name


async def detach(session: AsyncSession, principal_type: str, ref: str, policy_name: str) -> str:
    principal_id, principal_name = await _principal(session, principal_type, ref)
    result = await session.execute(delete(IamAttachment).where(*_attachment(principal_type, principal_id, policy_name)))
    if not getattr(result, "rowcount", 0):
        raise IamError("not_found", f"policy {policy_name!r} is not attached to {principal_type} {principal_name!r}")
    return principal_name


def policy_document(policy: IamPolicy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "description": policy.description,
        "system": False,
        "document": policy.document,
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
    }


def system_document(name: str) -> dict[str, Any]:
    return {"name": name, "description": "system policy", "system": True, "document": system_policy_document(name)}


async def _principal(session: AsyncSession, principal_type: str, ref: str) -> tuple[str, str]:
    if principal_type == USER:
        user = await find_user(session, ref)
        return user.id, user.name
    if principal_type == GROUP:
        group = await find_group(session, ref)
        return group.id, group.name
    raise IamError("invalid", f"principal type: expected user or group, got {principal_type!r}")


def _attachment(principal_type: str, principal_id: str, policy_name: str) -> tuple[Any, ...]:
    return (
        IamAttachment.principal_type == principal_type,
        IamAttachment.principal_id == principal_id,
        IamAttachment.policy_name == policy_name,
    )
