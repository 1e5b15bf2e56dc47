"""Huawei's system policies and roles for SWR, as ``Policy`` objects.

What each may do follows the seeds' table of common operations (seed 000, table 7-3; seed 002,
table 3), reproduced in :data:`OPERATIONS` and checked by the tests:

=====================  ========  ========  ========  =====  ======
operation              Full      Operate   ReadOnly  Admin  Tenant
=====================  ========  ========  ========  =====  ======
push / pull            ✓ / ✓     ✓ / ✓     ✗ / ✓     ✓      ✓
triggers, edit, share  ✓         ✓         ✗         ✓      ✓
grant, delete, sync    ✓         ✓         ✗         ✓      ✓
create/delete org      ✓         ✓         ✗         ✓      ✓
=====================  ========  ========  ========  =====  ======

The seeds list the same operations for FullAccess and OperateAccess; they differ in what the
names say: "all permissions" against "operation permissions". We read OperateAccess as
everything but creating and deleting enterprise instances. ReadOnlyAccess is every ``list*``
and ``get*`` action plus pulling; it includes ``swr::createLoginSecret`` because a pull needs a
``docker login`` (Huawei's own "allow image pull" example grants both). ``SWR Admin`` is a
"1.0" role over every SWR action (Huawei's legacy document names ``SWR:software:*`` and
``SWR:dockerimage:*``, which predate the per-API actions). ``Tenant Administrator`` is every
action of every service but IAM, keyed on ``g:ServiceName``.
"""

from __future__ import annotations

from collections.abc import Mapping

from workers.iam.policy import Policy, parse_policy

FULL_ACCESS = "SWR FullAccess"
OPERATE_ACCESS = "SWR OperateAccess"
READ_ONLY_ACCESS = "SWR ReadOnlyAccess"
ADMIN = "SWR Admin"
TENANT_ADMINISTRATOR = "Tenant Administrator"

_DOCUMENTS: Mapping[str, object] = {
    FULL_ACCESS: {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["swr:*:*"]}]},
    OPERATE_ACCESS: {
        "Version": "1.1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["swr::*", "swr:namespace:*", "swr:repo:*", "swr:repository:*", "swr:instance:*Replication*"],
            }
        ],
    },
    READ_ONLY_ACCESS: {
        "Version": "1.1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["swr:*:list*", "swr:*:get*", "swr:repo:download", "swr::createLoginSecret"],
            }
        ],
    },
    ADMIN: {"Version": "1.0", "Statement": [{"Effect": "Allow", "Action": ["swr:*:*"]}]},
    TENANT_ADMINISTRATOR: {
        "Version": "1.1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["*:*:*"],
                "Condition": {"StringNotEqualsIgnoreCase": {"g:ServiceName": ["iam"]}},
            }
        ],
    },
}

SYSTEM_POLICIES: Mapping[str, Policy] = {name: parse_policy(doc, name=name) for name, doc in _DOCUMENTS.items()}

# The seeds' common operations and the actions they take (all must be allowed).
OPERATIONS: Mapping[str, tuple[str, ...]] = {
    "push an image": ("swr:repo:upload", "swr::createLoginSecret"),
    "pull an image": ("swr:repo:download", "swr::createLoginSecret"),
    "add a trigger": ("swr:repo:createTrigger",),
    "edit an image": ("swr:repo:updateRepo",),
    "share an image": ("swr:repo:createRepoShare",),
    "grant permissions": ("swr:repo:createRepoAccess", "swr:namespace:createNamespaceAccess"),
    "delete an image or a tag": ("swr:repo:deleteRepo", "swr:repo:deleteRepoTag"),
    "sync images": ("swr:repo:createAutoSyncRepoJob", "swr:repo:createManualSyncRepoJob"),
    "create an organization": ("swr:namespace:createNamespace",),
    "delete an organization": ("swr:namespace:deleteNamespace",),
}


def system_policy(name: str) -> Policy:
    """The system policy or role called ``name`` (e.g. ``"SWR ReadOnlyAccess"``); raises KeyError."""
    return SYSTEM_POLICIES[name]


def system_policy_document(name: str) -> object:
    """The document the system policy ``name`` is parsed from (to show it); raises KeyError."""
    return _DOCUMENTS[name]
