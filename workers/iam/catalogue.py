"""The SWR actions: name, access level and resource type, and which actions depend on which.

Basic edition (``swr:namespace:*``, ``swr:repo:*``, ``swr::*``): Huawei's table of SWR actions
(seed ``001``, table 1), copied name for name. Enterprise edition: Huawei names an operation on
a whole instance ``swr:instance:<op>`` (resource ``instance``) and one inside a namespace
``swr:repository:<op>`` (resource ``repository``). The names marked ``# Huawei`` are the ones
Huawei's enterprise API reference gives for that API; the others are ours, in the same style.
Administration of IAM itself (``iam:users:create``, ...) is ours too, on Resource ``*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from workers.iam.urn import INSTANCE, NAMESPACE, REPO, REPOSITORY


class AccessLevel(StrEnum):
    LIST = "list"
    READ = "read"
    WRITE = "write"
    PERMISSION_MANAGEMENT = "permission_management"


@dataclass(frozen=True)
class ActionInfo:
    """One action of the catalogue. ``resource_type`` is None for account-wide actions (Resource ``*``)."""

    name: str
    level: AccessLevel
    resource_type: str | None
    condition_keys: tuple[str, ...] = ()

    @property
    def operation(self) -> str:
        """The last part of the name: ``createTrigger`` for ``swr:repo:createTrigger``."""
        return self.name.rsplit(":", 1)[1]


L, R, W, P = AccessLevel.LIST, AccessLevel.READ, AccessLevel.WRITE, AccessLevel.PERMISSION_MANAGEMENT
_SHARE_KEYS = ("swr:TargetAccountId", "swr:TargetOrgPath", "swr:TargetOrgId")
_SYNC_KEYS = ("swr:TargetRegion", "swr:TargetNamespace")
_REPLICATION_KEYS = ("swr:TargetRegion", "swr:SourceRegion")


def _a(name: str, level: AccessLevel, resource_type: str | None, keys: tuple[str, ...] = ()) -> ActionInfo:
    return ActionInfo(name, level, resource_type, keys)


_BASIC = [
    _a("swr:namespace:createNamespace", W, NAMESPACE),
    _a("swr:namespace:deleteNamespace", W, NAMESPACE),
    _a("swr:namespace:listNamespaces", L, NAMESPACE),
    _a("swr:namespace:getNamespace", R, NAMESPACE),
    _a("swr:repo:createRepo", W, REPO),
    _a("swr:repo:deleteRepo", W, REPO),
    _a("swr:repo:listRepos", L, REPO),
    _a("swr:repo:listSharedRepos", L, REPO),
    _a("swr:repo:getRepo", R, REPO),
    _a("swr:repo:updateRepo", W, REPO),
    _a("swr:repo:deleteRepoTag", W, REPO),
    _a("swr:repo:createRepoTag", W, REPO),
    _a("swr:repo:listRepoTags", L, REPO),
    _a("swr:repo:createRepoDomain", P, REPO, _SHARE_KEYS),
    _a("swr:repo:deleteRepoDomain", P, REPO),
    _a("swr:repo:listRepoDomains", L, REPO),
    _a("swr:repo:getRepoDomain", R, REPO),
    _a("swr:repo:updateRepoDomain", P, REPO),
    _a("swr:repo:createRepoShare", P, REPO, _SHARE_KEYS),
    _a("swr:repo:deleteRepoShare", P, REPO),
    _a("swr:repo:listRepoShares", L, REPO),
    _a("swr:repo:getRepoShare", R, REPO),
    _a("swr:repo:updateRepoShare", P, REPO),
    _a("swr:repo:createAutoSyncRepoJob", W, REPO, _SYNC_KEYS),
    _a("swr:repo:createManualSyncRepoJob", W, REPO, _SYNC_KEYS),
    _a("swr:repo:deleteAutoSyncRepoJob", W, REPO),
    _a("swr:repo:listAutoSyncRepoJobs", L, REPO),
    _a("swr:repo:getSyncRepoJobInfo", R, REPO),
    _a("swr:repo:createTrigger", W, REPO),
    _a("swr:repo:deleteTrigger", W, REPO),
    _a("swr:repo:listTriggers", L, REPO),
    _a("swr:repo:getTrigger", R, REPO),
    _a("swr:repo:updateTrigger", W, REPO),
    _a("swr:repo:createRetention", W, REPO),
    _a("swr:repo:deleteRetention", W, REPO),
    _a("swr:repo:listRetentionHistories", L, REPO),
    _a("swr:repo:listRetentions", L, REPO),
    _a("swr:repo:getRetention", R, REPO),
    _a("swr:repo:updateRetention", W, REPO),
    _a("swr::createLoginSecret", W, None),
    _a("swr::listQuotas", L, None),
    _a("swr::getDomainOverview", R, None),
    _a("swr::getDomainResourceReports", R, None),
    _a("swr:namespace:multipartUpload", W, NAMESPACE),
    _a("swr:namespace:createNamespaceAccess", P, NAMESPACE),
    _a("swr:namespace:deleteNamespaceAccess", P, NAMESPACE),
    _a("swr:namespace:getNamespaceAccess", R, NAMESPACE),
    _a("swr:namespace:updateNamespaceAccess", P, NAMESPACE),
    _a("swr:repo:createRepoAccess", P, REPO),
    _a("swr:repo:deleteRepoAccess", P, REPO),
    _a("swr:repo:getRepoAccess", R, REPO),
    _a("swr:repo:updateRepoAccess", P, REPO),
    _a("swr:repo:upload", W, REPO),
    _a("swr:repo:download", R, REPO),
]

_ENTERPRISE = [
    _a("swr:instance:create", W, INSTANCE),  # instance lifecycle: not served here, see system.py
    _a("swr:instance:delete", W, INSTANCE),  # Huawei (its deny-policy example)
    _a("swr:instance:createReplicationPolicy", W, INSTANCE, _REPLICATION_KEYS),  # Huawei
    _a("swr:instance:deleteReplicationPolicy", W, INSTANCE),
    _a("swr:instance:updateReplicationPolicy", W, INSTANCE, _REPLICATION_KEYS),
    _a("swr:instance:listReplicationPolicies", L, INSTANCE),
    _a("swr:instance:getReplicationPolicy", R, INSTANCE),
    _a("swr:instance:executeReplicationPolicy", W, INSTANCE),
    _a("swr:instance:listReplicationExecutions", L, INSTANCE),  # also their tasks and sub-tasks
    _a("swr:instance:stopReplicationExecution", W, INSTANCE),
    _a("swr:instance:listRegistries", L, INSTANCE),  # the registries replication can target
    _a("swr:repository:createImmutableRule", W, REPOSITORY),  # Huawei
    _a("swr:repository:deleteImmutableRule", W, REPOSITORY),  # Huawei
    _a("swr:repository:updateImmutableRule", W, REPOSITORY),  # Huawei
    _a("swr:repository:listImmutableRules", L, REPOSITORY),  # Huawei
    _a("swr:repository:createRetentionPolicy", W, REPOSITORY),  # Huawei
    _a("swr:repository:deleteRetentionPolicy", W, REPOSITORY),
    _a("swr:repository:updateRetentionPolicy", W, REPOSITORY),
    _a("swr:repository:listRetentionPolicies", L, REPOSITORY),
    _a("swr:repository:getRetentionPolicy", R, REPOSITORY),
    _a("swr:repository:executeRetentionPolicy", W, REPOSITORY),
    _a("swr:repository:listRetentionExecutions", L, REPOSITORY),  # also their tasks and sub-tasks
    _a("swr:repository:createWebhookPolicy", W, REPOSITORY),
    _a("swr:repository:deleteWebhookPolicy", W, REPOSITORY),
    _a("swr:repository:updateWebhookPolicy", W, REPOSITORY),
    _a("swr:repository:listWebhookPolicies", L, REPOSITORY),
    _a("swr:repository:getWebhookPolicy", R, REPOSITORY),
    _a("swr:repository:listWebhookJobs", L, REPOSITORY),  # Huawei
]


# Ours: administering IAM itself (``/v3/iam``). They act on no SWR resource (Resource ``*``), no
# grant ever covers them, and only a policy naming them (never an ``swr:*`` one) allows them.
_IAM = [
    _a("iam:users:create", W, None),
    _a("iam:users:delete", W, None),
    _a("iam:users:list", L, None),
    _a("iam:users:get", R, None),
    _a("iam:groups:create", W, None),
    _a("iam:groups:delete", W, None),
    _a("iam:groups:list", L, None),
    _a("iam:groups:get", R, None),
    _a("iam:groups:addUser", P, None),
    _a("iam:groups:removeUser", P, None),
    _a("iam:accessKeys:create", W, None),
    _a("iam:accessKeys:update", W, None),
    _a("iam:accessKeys:delete", W, None),
    _a("iam:accessKeys:list", L, None),
    _a("iam:policies:create", W, None),
    _a("iam:policies:delete", W, None),
    _a("iam:policies:list", L, None),
    _a("iam:policies:get", R, None),
    _a("iam:policies:attach", P, None),
    _a("iam:policies:detach", P, None),
    _a("iam:grants:list", L, None),
    _a("iam:audit:list", L, None),
]


ACTIONS: Mapping[str, ActionInfo] = {info.name: info for info in [*_BASIC, *_ENTERPRISE, *_IAM]}
_BY_LOWER = {name.lower(): info for name, info in ACTIONS.items()}

# Seed 001, table 2: an API that needs more than its own action. Which resource each dependent
# action is checked on is the route table's business (workers.iam.actions).
DEPENDENT_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "swr:repo:createAutoSyncRepoJob": ("swr::createLoginSecret", "swr:repo:download", "swr:repo:upload"),
    "swr:repo:createManualSyncRepoJob": ("swr::createLoginSecret", "swr:repo:download", "swr:repo:upload"),
}


def action_info(name: str) -> ActionInfo | None:
    """The catalogue entry of ``name`` (actions are case-insensitive), or None if unknown."""
    return _BY_LOWER.get(name.lower())
