"""SWR's own permissions on namespaces and repositories (``UserAuth.auth``: 1, 3, 7).

Pure, no I/O. Besides IAM policies, SWR lets a namespace or repository administrator grant a
user *read* (1), *edit* (3) or *manage* (7) on that namespace or repository (seed 000: "镜像权限" /
"组织权限"; seed 003: "read, write, and manage permissions ... either a specific image or images
in a specific organization"). A repository grant covers that repository; a namespace grant
covers the namespace and every repository in it. A grant is regional, like the resources.

What each level permits, derived from the catalogue's access levels:

* read — every ``list`` and ``read`` action: pull, list and show tags, triggers, retention
  rules and their history, sync jobs, and who has access;
* edit — read, plus every ``write`` action that deletes nothing: push, update the repository,
  create and update triggers, retention rules and sync rules, create repositories in a granted
  namespace, multipart upload;
* manage — everything on the covered resources: also deleting (repositories, tags, triggers,
  retention and sync rules, the namespace itself) and ``permission_management`` (granting access,
  sharing).

Grants never cover account-wide actions (``swr::*``: login secrets, quotas), creating a
namespace, or enterprise-edition resources. A ``list`` over the whole account (``...:repo:*``,
``...:namespace:*``) is allowed to anyone holding a grant in that region: the API answers with
what the grants cover, and filtering the answer is the shell's job.

How grants combine with policies is ``workers.iam.authorize``'s business.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from workers.iam.catalogue import AccessLevel, action_info
from workers.iam.urn import ANY, NAMESPACE, REPO, SERVICE, Urn, parse_urn


class AuthLevel(IntEnum):
    """SWR's ``auth`` values. Higher levels include the lower ones."""

    READ = 1
    EDIT = 3
    MANAGE = 7


@dataclass(frozen=True)
class Grant:
    """One user's permission on a namespace (``repository=None``) or one repository of it."""

    region: str
    account_id: str
    namespace: str
    repository: str | None
    level: AuthLevel

    def __str__(self) -> str:
        target = f"namespace {self.namespace}" if self.repository is None else f"{self.namespace}/{self.repository}"
        return f"{self.level.name.lower()} on {target}"


def required_level(action: str) -> AuthLevel | None:
    """The lowest grant level that permits ``action``, or None if no grant ever does."""
    info = action_info(action)
    if info is None or info.resource_type not in (REPO, NAMESPACE) or info.operation == "createNamespace":
        return None
    if info.level in (AccessLevel.LIST, AccessLevel.READ):
        return AuthLevel.READ
    if info.level is AccessLevel.PERMISSION_MANAGEMENT or info.operation.startswith("delete"):
        return AuthLevel.MANAGE
    return AuthLevel.EDIT


def covering_grant(grants: Iterable[Grant], action: str, resource: str) -> Grant | None:
    """The first grant that permits ``action`` on ``resource`` (a URN), or None."""
    needed = required_level(action)
    urn = parse_urn(resource)
    if needed is None or urn is None or urn.service != SERVICE:
        return None
    account_wide = urn.path == ANY and needed is AuthLevel.READ and _is_list(action)
    for grant in grants:
        if (grant.region, grant.account_id) != (urn.region, urn.account_id) or grant.level < needed:
            continue
        if account_wide or _covers(grant, urn):
            return grant
    return None


def grant_allows(grants: Iterable[Grant], action: str, resource: str) -> bool:
    """Whether some grant permits ``action`` on ``resource``."""
    return covering_grant(grants, action, resource) is not None


def _is_list(action: str) -> bool:
    info = action_info(action)
    return info is not None and info.level is AccessLevel.LIST


def _covers(grant: Grant, urn: Urn) -> bool:
    if urn.resource_type == NAMESPACE:
        return grant.repository is None and urn.path == grant.namespace
    if urn.resource_type != REPO:
        return False
    namespace, _, repository = urn.path.partition("/")
    if namespace != grant.namespace or not repository:
        return False
    return grant.repository is None or grant.repository == repository
