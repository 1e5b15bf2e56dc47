"""Users, groups and access keys in the database: the IAM shell's directory of principals.

Called by the ``/v3/iam`` API and the ``registry-workers iam`` CLI inside a transaction they
own; every function runs a few indexed statements and raises ``IamError`` for what the caller
got wrong (unknown user, duplicate name). A secret key is shown once, by ``create_access_key``,
and stored only as a ``SecretBox`` token: verifying an AK/SK signature needs the plaintext.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import IamAccessKey, IamAttachment, IamGroup, IamGroupMember, IamUser
from workers.secrets import SecretBox

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
USER, GROUP = "user", "group"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


class IamError(Exception):
    """A request IAM cannot honour. ``kind``: ``invalid`` (400), ``not_found`` (404), ``conflict`` (409)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise IamError("invalid", f"{field}: expected 1-64 letters, digits, '_', '.', '@' or '-', got {value!r}")
    return value


async def add_unique(session: AsyncSession, row: Any, duplicate: str) -> None:
    """Insert ``row`` now (in a savepoint); a unique-constraint violation is ``IamError`` (conflict)."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise IamError("conflict", duplicate) from None


# --- users ----------------------------------------------------------------------------------


async def create_user(session: AsyncSession, name: object, description: str, now: datetime) -> IamUser:
    user = IamUser(id=uuid.uuid4().hex, name=check_name(name, "name"), description=description, created_at=now)
    await add_unique(session, user, f"user {name!r} already exists")
    return user


async def find_user(session: AsyncSession, ref: str) -> IamUser:
    """The user whose id or name is ``ref``; raises ``IamError`` (not_found)."""
    user = await session.get(IamUser, ref) or await session.scalar(select(IamUser).where(IamUser.name == ref))
    if user is None:
        raise IamError("not_found", f"user {ref!r} not found")
    return user


async def list_users(session: AsyncSession) -> list[IamUser]:
    return list(await session.scalars(select(IamUser).order_by(IamUser.name)))


async def delete_user(session: AsyncSession, ref: str) -> IamUser:
    """The user with keys, memberships and grants (cascading) and policy attachments."""
    user = await find_user(session, ref)
    await _detach_all(session, USER, user.id)
    await session.delete(user)
    return user


async def user_document(session: AsyncSession, user: IamUser, *, details: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": user.id,
        "name": user.name,
        "description": user.description,
        "created_at": iso(user.created_at),
    }
    if details:
        groups = await session.scalars(
            select(IamGroup.name).join(IamGroupMember).where(IamGroupMember.user_id == user.id).order_by(IamGroup.name)
        )
        document["groups"] = list(groups)
        document["policies"] = await attached_names(session, USER, user.id)
        document["access_keys"] = [key_document(k, user) for k in await _keys_of(session, user.id)]
    return document


# --- groups ---------------------------------------------------------------------------------


async def create_group(session: AsyncSession, name: object, description: str, now: datetime) -> IamGroup:
    group = IamGroup(id=uuid.uuid4().hex, name=check_name(name, "name"), description=description, created_at=now)
    await add_unique(session, group, f"group {name!r} already exists")
    return group


async def find_group(session: AsyncSession, ref: str) -> IamGroup:
    group = await session.get(IamGroup, ref) or await session.scalar(select(IamGroup).where(IamGroup.name == ref))
    if group is None:
        raise IamError("not_found", f"group {ref!r} not found")
    return group


async def list_groups(session: AsyncSession) -> list[IamGroup]:
    return list(await session.scalars(select(IamGroup).order_by(IamGroup.name)))


async def delete_group(session: AsyncSession, ref: str) -> IamGroup:
    group = await find_group(session, ref)
    await _detach_all(session, GROUP, group.id)
    await session.delete(group)
    return group


async def add_member(session: AsyncSession, group_ref: str, user_ref: str) -> tuple[IamGroup, IamUser]:
    """Idempotent: adding a member twice changes nothing."""
    group, user = await find_group(session, group_ref), await find_user(session, user_ref)
    if await session.get(IamGroupMember, (group.id, user.id)) is None:
        session.add(IamGroupMember(group_id=group.id, user_id=user.id))
    return group, user


async def remove_member(session: AsyncSession, group_ref: str, user_ref: str) -> None:
    group, user = await find_group(session, group_ref), await find_user(session, user_ref)
    membership = await session.get(IamGroupMember, (group.id, user.id))
    if membership is None:
        raise IamError("not_found", f"user {user.name!r} is not a member of group {group.name!r}")
    await session.delete(membership)


async def group_document(session: AsyncSession, group: IamGroup) -> dict[str, Any]:
    users = await session.scalars(
        select(IamUser.name).join(IamGroupMember).where(IamGroupMember.group_id == group.id).order_by(IamUser.name)
    )
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "created_at": iso(group.created_at),
        "users": list(users),
        "policies": await attached_names(session, GROUP, group.id),
    }


# --- access keys ----------------------------------------------------------------------------


async def create_access_key(
    session: AsyncSession, box: SecretBox, user_ref: str, now: datetime
) -> tuple[IamAccessKey, IamUser, str]:
    """A new enabled key of the user and its plaintext secret (returned here only)."""
    user = await find_user(session, user_ref)
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    key = IamAccessKey(
        access_key="RW" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18)),
        user_id=user.id,
        secret=box.encrypt(secret),
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    session.add(key)
    return key, user, secret


async def list_access_keys(session: AsyncSession, user_ref: str) -> tuple[IamUser, list[IamAccessKey]]:
    user = await find_user(session, user_ref)
    return user, await _keys_of(session, user.id)


async def set_access_key_enabled(session: AsyncSession, access_key: str, enabled: bool, now: datetime) -> IamAccessKey:
    key = await _find_key(session, access_key)
    key.enabled, key.updated_at = enabled, now
    return key


async def delete_access_key(session: AsyncSession, access_key: str) -> IamAccessKey:
    key = await _find_key(session, access_key)
    await session.delete(key)
    return key


def key_document(key: IamAccessKey, user: IamUser, secret: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "access_key": key.access_key,
        "user_id": user.id,
        "user_name": user.name,
        "enabled": key.enabled,
        "created_at": iso(key.created_at),
    }
    if secret is not None:
        document["secret_key"] = secret
    return document


async def _find_key(session: AsyncSession, access_key: str) -> IamAccessKey:
    key = await session.get(IamAccessKey, access_key)
    if key is None:
        raise IamError("not_found", f"access key {access_key[:64]!r} not found")
    return key


async def _keys_of(session: AsyncSession, user_id: str) -> list[IamAccessKey]:
    query = select(IamAccessKey).where(IamAccessKey.user_id == user_id).order_by(IamAccessKey.created_at)
    return list(await session.scalars(query))


# --- attachments (the rows; which policies exist is workers.iam.policy_store's business) -----


async def attached_names(session: AsyncSession, principal_type: str, principal_id: str) -> list[str]:
    query = select(IamAttachment.policy_name).where(
        IamAttachment.principal_type == principal_type, IamAttachment.principal_id == principal_id
    )
    return sorted(await session.scalars(query))


async def _detach_all(session: AsyncSession, principal_type: str, principal_id: str) -> None:
    await session.execute(
        delete(IamAttachment).where(
            IamAttachment.principal_type == principal_type, IamAttachment.principal_id == principal_id
        )
    )
