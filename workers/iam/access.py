"""What one user may do, loaded from the database and kept briefly: ``AccessCache``.

The enforcement middleware asks ``access_of(user_id)`` on every request by a database user. A
miss costs two queries (the policies attached to the user and to their groups, with their
documents; the user's grants); the answer is kept ``ttl_s`` seconds. Every IAM change made
through this process calls ``invalidate()``, so it applies to the next request; a change made
by another process (another API replica, the CLI) applies within ``ttl_s``.

Custom policies are parsed once per stored version (``id``, ``updated_at``): a kept ``Policy``
memoises which statements concern each action, which is what makes decisions cheap. A stored
document that no longer parses fails closed: it becomes a policy that denies everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import IamAttachment, IamGrant, IamGroupMember, IamPolicy
from workers.iam.grant_store import core_grants
from workers.iam.grants import Grant
from workers.iam.policy import Policy, PolicyError, parse_policy
from workers.iam.principals import GROUP, USER
from workers.iam.system import SYSTEM_POLICIES
from workers.iam.urn import Scope

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 1.0
_MAX_USERS = 10_000  # cached users; the cache starts over when full
_DENY_ALL = {"Version": "1.1", "Statement": [{"Effect": "Deny", "Action": ["*"]}]}


@dataclass(frozen=True)
class Access:
    """A user's policies (their own and their groups', system ones included) and SWR grants."""

    policies: tuple[Policy, ...]
    grants: tuple[Grant, ...]


class AccessCache:
    """Loads and keeps ``Access`` per user id. Safe to share across the tasks of one event loop."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        scope: Scope,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sessions = sessions
        self._scope = scope
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, Access]] = {}
        self._parsed: dict[tuple[int, datetime], Policy] = {}
        self._generation = 0

    async def access_of(self, user_id: str) -> Access:
        """The user's access, from the cache or the database (may raise a database error)."""
        now = self._clock()
        hit = self._entries.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        access = await self._load(user_id)
        if generation == self._generation:  # a load that raced an invalidation is not kept
            if len(self._entries) >= _MAX_USERS:
                self._entries.clear()
            self._entries[user_id] = (now + self._ttl_s, access)
        return access

    def invalidate(self) -> None:
        """Forget every user's access: called after any change to users, policies or grants."""
        self._generation += 1
        self._entries.clear()

    async def _load(self, user_id: str) -> Access:
        groups = select(IamGroupMember.group_id).where(IamGroupMember.user_id == user_id)
        attached = (
            select(IamAttachment.policy_name, IamPolicy)
            .outerjoin(IamPolicy, IamPolicy.name == IamAttachment.policy_name)
            .where(
                or_(
                    and_(IamAttachment.principal_type == USER, IamAttachment.principal_id == user_id),
                    and_(IamAttachment.principal_type == GROUP, IamAttachment.principal_id.in_(groups)),
                )
            )
        )
        async with self._sessions() as session:
            rows = (await session.execute(attached)).all()
            grant_rows = list(await session.scalars(select(IamGrant).where(IamGrant.user_id == user_id)))
        policies: dict[str, Policy] = {}
        for name, stored in rows:
            if name in SYSTEM_POLICIES:
                policies[name] = SYSTEM_POLICIES[name]
            elif stored is not None:
                policies[name] = self._parse(stored)
        return Access(tuple(policies[name] for name in sorted(policies)), core_grants(grant_rows, self._scope))

    def _parse(self, stored: IamPolicy) -> Policy:
        key = (stored.id, stored.updated_at)
        policy = self._parsed.get(key)
        if policy is None:
            try:
                policy = parse_policy(stored.document, name=stored.name)
            except PolicyError as exc:
                log.error("stored policy %r does not parse (%s): it denies everything until fixed", stored.name, exc)
                policy = parse_policy(_DENY_ALL, name=f"{stored.name} (invalid: denies everything)")
            if len(self._parsed) >= _MAX_USERS:
                self._parsed.clear()
            self._parsed[key] = policy
        return policy
