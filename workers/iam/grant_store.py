"""SWR grants in the database: a user's read (1), edit (3) or manage (7) on a namespace or repository.

Called by the SWR ``.../access`` routes, the ``/v3/iam/grants`` list and the CLI inside a
transaction they own; raises ``IamError``. A namespace grant is stored with ``repository=""``.
What a level permits is the pure core's business (``workers.iam.grants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import IamGrant, IamUser
from workers.iam.grants import AuthLevel, Grant
from workers.iam.principals import IamError, find_user, iso
from workers.iam.urn import Scope

LEVELS = {level.name.lower(): level for level in AuthLevel}  # read, edit, manage


@dataclass(frozen=True)
class UserAuth:
    """One entry of an SWR ``UserAuth`` list: who (id, else name) and which level."""

    field: str  # where it came from, for messages: "[0]"
    user_id: str
    user_name: str
    level: AuthLevel


def auth_level(value: object, field: str) -> AuthLevel:
    """1/3/7 (SWR) or read/edit/manage (CLI) as an ``AuthLevel``; else ``IamError`` naming ``field``."""
    if isinstance(value, str) and value.lower() in LEVELS:
        return LEVELS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in tuple(AuthLevel):
        return AuthLevel(value)
    raise IamError("invalid", f"{field}: expected 1 (read), 3 (edit) or 7 (manage), got {value!r}")


async def put_grants(
    session: AsyncSession,
    namespace: str,
    repository: str,
    entries: Sequence[UserAuth],
    creator: str,
    now: datetime,
    *,
    update: bool = False,
) -> None:
    """Create or change each user's grant; with ``update``, a user without one is ``not_found``."""
    for entry in entries:
        user = await _user_of(session, entry)
        grant = await session.scalar(
            select(IamGrant).where(*_target(namespace, repository), IamGrant.user_id == user.id)
        )
        if grant is None and update:
            raise IamError(
                "not_found", f"{entry.field}: user {user.name!r} has no access to {_label(namespace, repository)}"
            )
        if grant is None:
            grant = IamGrant(
                user_id=user.id, namespace=namespace, repository=repository, creator=creator, created_at=now
            )
            session.add(grant)
        grant.auth, grant.updated_at = int(entry.level), now


async def revoke_grants(session: AsyncSession, namespace: str, repository: str, user_refs: Sequence[str]) -> None:
    """Remove the users' grants (by id or name); a user without one is ``not_found``."""
    for index, ref in enumerate(user_refs):
        user = await find_user(session, ref)
        result = await session.execute(
            delete(IamGrant).where(*_target(namespace, repository), IamGrant.user_id == user.id)
        )
        if not getattr(result, "rowcount", 0):
            raise IamError(
                "not_found", f"[{index}]: user {user.name!r} has no access to {_label(namespace, repository)}"
            )


async def grants_on(session: AsyncSession, namespace: str, repository: str) -> list[tuple[IamGrant, str]]:
    """The grants on exactly this namespace (``repository=""``) or repository, with user names."""
    query = select(IamGrant, IamUser.name).join(IamUser).where(*_target(namespace, repository)).order_by(IamUser.name)
    return [(grant, name) for grant, name in (await session.execute(query)).all()]


async def list_grants(session: AsyncSession, user_ref: str | None, namespace: str | None) -> list[dict[str, Any]]:
    query = select(IamGrant, IamUser.name).join(IamUser)
    if user_ref:
        query = query.where(IamGrant.user_id == (await find_user(session, user_ref)).id)
    if namespace:
        query = query.where(IamGrant.namespace == namespace)
    rows = await session.execute(query.order_by(IamGrant.namespace, IamGrant.repository, IamUser.name))
    return [grant_document(grant, name) for grant, name in rows.all()]


def grant_document(grant: IamGrant, user_name: str) -> dict[str, Any]:
    return {
        "user_id": grant.user_id,
        "user_name": user_name,
        "namespace": grant.namespace,
        "repository": grant.repository or None,
        "auth": grant.auth,
        "level": AuthLevel(grant.auth).name.lower(),
        "creator": grant.creator,
        "created_at": iso(grant.created_at),
        "updated_at": iso(grant.updated_at),
    }


def core_grants(rows: Sequence[IamGrant], scope: Scope) -> tuple[Grant, ...]:
    """The rows as the decision core's ``Grant``s, in the region and account this service serves."""
    return tuple(
        Grant(scope.region, scope.account_id, row.namespace, row.repository or None, AuthLevel(row.auth))
        for row in rows
        if row.auth in tuple(AuthLevel)
    )


async def _user_of(session: AsyncSession, entry: UserAuth) -> IamUser:
    user = await session.get(IamUser, entry.user_id) if entry.user_id else None
    if user is None and entry.user_name:
        user = await session.scalar(select(IamUser).where(IamUser.name == entry.user_name))
    if user is None:
        who = entry.user_id or entry.user_name or "(none given)"
        raise IamError("invalid", f"{entry.field}: no user with id or name {who!r}")
    return user


def _target(namespace: str, repository: str) -> tuple[Any, ...]:
    return (IamGrant.namespace == namespace, IamGrant.repository == repository)


def _label(namespace: str, repository: str) -> str:
    return f"repository {namespace}/{repository}" if repository else f"namespace {namespace}"
