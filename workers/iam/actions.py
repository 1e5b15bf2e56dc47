"""Which action, on which resource, each route of the SWR API needs: ``ROUTE_ACTIONS``.

Pure, no I/O. The API shell calls ``route_action(method, template)`` with the matched route
template (aiohttp: ``request.match_info.route.resource.canonical``), then
``RouteAction.requests(scope, params, context)`` for the access requests to decide (the
route's own action first, then its dependent actions) and hands them to
``workers.iam.authorize.authorize``. ``route_action`` raises ``UnknownRoute`` for a route not in
the table: a served route without an entry is a bug, and the shell should answer 403, not 200.

``params`` holds the path parameters, plus these from the body or query where a route names
its target there: ``namespace`` (``POST /v2/manage/namespaces``, and the ``namespace`` query of
the repository lists) and ``repository`` (``POST .../repos``); absent, the name is ``*``, which
only a policy covering every name matches. ``context`` holds the condition keys; for sync
routes the shell copies ``remoteRegionId`` to ``swr:TargetRegion`` and ``remoteNamespace`` to
``swr:TargetNamespace`` (ours), which also say where ``swr:repo:upload`` is checked; for
enterprise replication policies, ``swr:TargetRegion``/``swr:SourceRegion``.

Actions are the seeds' names (seed 001, table 2) wherever a route is there; the rest are
marked where they are defined (``workers.iam.catalogue``) or below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from workers.iam.catalogue import ACTIONS, DEPENDENT_ACTIONS, AccessLevel, ActionInfo, action_info
from workers.iam.policy import AccessRequest
from workers.iam.urn import (
    ANY,
    Scope,
    enterprise_repository_urn,
    instance_urn,
    namespace_urn,
    repo_urn,
)

__all__ = [
    "ACTIONS",
    "DEPENDENT_ACTIONS",
    "ROUTE_ACTIONS",
    "AccessLevel",
    "ActionInfo",
    "Dependency",
    "RouteAction",
    "RouteTarget",
    "UnknownRoute",
    "action_info",
    "route_action",
]


class UnknownRoute(LookupError):
    """No entry in ``ROUTE_ACTIONS`` for this (method, template)."""


@dataclass(frozen=True)
class RouteTarget:
    """What a resource builder sees: where we serve, the route's parameters and condition keys."""

    scope: Scope
    params: Mapping[str, str]
    context: Mapping[str, str] = field(default_factory=dict)  # keys lower-cased

    def param(self, name: str) -> str:
        """A parameter the shell may not have (a name from the body): ``*`` when absent."""
        return self.params.get(name) or ANY


ResourceBuilder = Callable[[RouteTarget], str]


@dataclass(frozen=True)
class Dependency:
    """An action the route also needs, on a resource of its own."""

    action: str
    resource: ResourceBuilder


@dataclass(frozen=True)
class RouteAction:
    """A route's action, the builder of its resource URN, and its dependent actions."""

    action: str
    resource: ResourceBuilder
    dependencies: tuple[Dependency, ...] = ()

    def requests(
        self, scope: Scope, params: Mapping[str, str], context: Mapping[str, str] | None = None
    ) -> tuple[AccessRequest, ...]:
        """The access requests to decide, this route's own first. Raises KeyError for a missing path parameter."""
        lowered = MappingProxyType({key.lower(): value for key, value in (context or {}).items()})
        target = RouteTarget(scope, params, lowered)
        own = AccessRequest(self.action, self.resource(target), lowered)
        return (own, *(AccessRequest(d.action, d.resource(target), lowered) for d in self.dependencies))


# --- resource builders ---------------------------------------------------------------------


def _account(target: RouteTarget) -> str:
    return ANY


def _namespace(target: RouteTarget) -> str:
    return namespace_urn(target.scope, target.params["namespace"])


def _named_namespace(target: RouteTarget) -> str:
    return namespace_urn(target.scope, target.param("namespace"))


def _repo(target: RouteTarget) -> str:
    return repo_urn(target.scope, target.params["namespace"], target.params["repository"])


def _new_repo(target: RouteTarget) -> str:
    return repo_urn(target.scope, target.params["namespace"], target.param("repository"))


def _repo_list(target: RouteTarget) -> str:
    """All repositories, or all of one namespace when the query names it."""
    if target.params.get("namespace"):
        return repo_urn(target.scope, target.params["namespace"], ANY)
    return f"swr:{target.scope.region}:{target.scope.account_id}:repo:{ANY}"


def _sync_target(target: RouteTarget) -> str:
    """The same repository in the sync's target region and namespace: where it uploads."""
    region = target.context.get("swr:targetregion") or target.scope.region
    namespace = target.context.get("swr:targetnamespace") or target.params["namespace"]
    return repo_urn(Scope(region, target.scope.account_id), namespace, target.params["repository"])


def _instance(target: RouteTarget) -> str:
    return instance_urn(target.scope, target.params["instance_id"])


def _ent_ns(target: RouteTarget) -> str:
    return enterprise_repository_urn(target.scope, target.params["instance_id"], target.params["namespace_name"])


def _ent_all(target: RouteTarget) -> str:
    return enterprise_repository_urn(target.scope, target.params["instance_id"], ANY)


_SYNC_DEPENDENCIES = (
    Dependency("swr::createLoginSecret", _account),
    Dependency("swr:repo:download", _repo),
    Dependency("swr:repo:upload", _sync_target),
)


def _r(action: str, resource: ResourceBuilder, dependencies: tuple[Dependency, ...] = ()) -> RouteAction:
    return RouteAction(action, resource, dependencies)


M = "/v2/manage"
NS = M + "/namespaces/{namespace}"
REPO = NS + "/repos/{repository}"
REPOSITORIES = NS + "/repositories/{repository}"  # the access-domain routes spell it so
INST = "/v2/{project_id}/instances/{instance_id}"
INST_NS = INST + "/namespaces/{namespace_name}"
RETENTION = INST_NS + "/retention/policies/{policy_id}"
WEBHOOK = INST_NS + "/webhook/policies/{policy_id}"
IMMUTABLE = INST_NS + "/immutabletagrules/{immutable_rule_id}"
REPLICATION_RUN = INST + "/replication/executions/{execution_id}"
RETENTION_RUN = RETENTION + "/executions/{execution_id}"
IAM = "/v3/iam"  # ours: administration of users, groups, keys, policies; audit trail

# fmt: off
ROUTE_ACTIONS: Mapping[tuple[str, str], RouteAction] = {
    # basic edition: seed 001, table 2
    ("POST", M + "/namespaces"): _r("swr:namespace:createNamespace", _named_namespace),
    ("DELETE", NS): _r("swr:namespace:deleteNamespace", _namespace),
    ("GET", M + "/namespaces"): _r("swr:namespace:listNamespaces", lambda t: namespace_urn(t.scope, ANY)),
    ("GET", NS): _r("swr:namespace:getNamespace", _namespace),
    ("POST", NS + "/repos"): _r("swr:repo:createRepo", _new_repo),
    ("DELETE", REPO): _r("swr:repo:deleteRepo", _repo),
    ("GET", M + "/repos"): _r("swr:repo:listRepos", _repo_list),
    ("GET", "/v3/manage/repos"): _r("swr:repo:listRepos", _repo_list),  # the v3 form of the same list
    ("GET", M + "/shared-repositories"): _r("swr:repo:listSharedRepos", _repo_list),
    ("GET", REPO): _r("swr:repo:getRepo", _repo),
    ("PATCH", REPO): _r("swr:repo:updateRepo", _repo),
    ("DELETE", REPO + "/tags/{tag}"): _r("swr:repo:deleteRepoTag", _repo),
    ("GET", REPO + "/tags"): _r("swr:repo:listRepoTags", _repo),
    ("POST", REPOSITORIES + "/access-domains"): _r("swr:repo:createRepoDomain", _repo),
    ("DELETE", REPOSITORIES + "/access-domains/{access_domain}"): _r("swr:repo:deleteRepoDomain", _repo),
    ("GET", REPOSITORIES + "/access-domains"): _r("swr:repo:listRepoDomains", _repo),
    ("GET", REPOSITORIES + "/access-domains/{access_domain}"): _r("swr:repo:getRepoDomain", _repo),
    ("PATCH", REPOSITORIES + "/access-domains/{access_domain}"): _r("swr:repo:updateRepoDomain", _repo),
    ("POST", REPO + "/shares"): _r("swr:repo:createRepoShare", _repo),
    ("DELETE", REPO + "/shares/{share_id}"): _r("swr:repo:deleteRepoShare", _repo),
    ("GET", REPO + "/shares"): _r("swr:repo:listRepoShares", _repo),
    ("PATCH", REPO + "/shares/{share_id}"): _r("swr:repo:updateRepoShare", _repo),
    ("POST", REPO + "/sync_repo"): _r("swr:repo:createAutoSyncRepoJob", _repo, _SYNC_DEPENDENCIES),
    ("POST", REPO + "/sync_images"): _r("swr:repo:createManualSyncRepoJob", _repo, _SYNC_DEPENDENCIES),
    ("DELETE", REPO + "/sync_repo"): _r("swr:repo:deleteAutoSyncRepoJob", _repo),
    # ours: re-runs the repository's automatic sync rules now. Copying is what a manual sync does;
    # the rules' targets were authorized (upload there) when the rules were created.
    ("POST", REPO + "/sync_repo/reconcile"): _r("swr:repo:createManualSyncRepoJob", _repo),
    ("GET", REPO + "/sync_repo"): _r("swr:repo:listAutoSyncRepoJobs", _repo),
    ("GET", REPO + "/sync_job"): _r("swr:repo:getSyncRepoJobInfo", _repo),
    ("GET", REPO + "/sync_job/{job_id}"): _r("swr:repo:getSyncRepoJobInfo", _repo),  # ours: one job
    ("POST", REPO + "/triggers"): _r("swr:repo:createTrigger", _repo),
    ("DELETE", REPO + "/triggers/{trigger}"): _r("swr:repo:deleteTrigger", _repo),
    ("GET", REPO + "/triggers"): _r("swr:repo:listTriggers", _repo),
    ("GET", REPO + "/triggers/{trigger}"): _r("swr:repo:getTrigger", _repo),
    ("PATCH", REPO + "/triggers/{trigger}"): _r("swr:repo:updateTrigger", _repo),
    # ours: re-running a delivery changes what the trigger did, as an update does
    ("POST", REPO + "/triggers/{trigger}/histories/{history_id}/retry"): _r("swr:repo:updateTrigger", _repo),
    ("POST", REPO + "/retentions"): _r("swr:repo:createRetention", _repo),
    ("DELETE", REPO + "/retentions/{retention_id}"): _r("swr:repo:deleteRetention", _repo),
    ("GET", REPO + "/retentions/histories"): _r("swr:repo:listRetentionHistories", _repo),
    ("GET", REPO + "/retentions"): _r("swr:repo:listRetentions", _repo),
    ("GET", REPO + "/retentions/{retention_id}"): _r("swr:repo:getRetention", _repo),
    ("PATCH", REPO + "/retentions/{retention_id}"): _r("swr:repo:updateRetention", _repo),
    # extensions: running a rule (or a stored plan) changes what it deletes like an update does;
    # restoring re-pushes a manifest, so it needs the upload right as well
    ("POST", REPO + "/retentions/{retention_id}/runs"): _r("swr:repo:updateRetention", _repo),
    ("GET", REPO + "/retentions/{retention_id}/runs"): _r("swr:repo:getRetention", _repo),
    ("GET", REPO + "/retentions/{retention_id}/runs/{run_id}"): _r("swr:repo:getRetention", _repo),
    ("POST", REPO + "/retentions/restore"): _r("swr:repo:updateRetention", _repo),
    # ours: backfill writes what the registry holds into the inventory retention plans from
    ("POST", REPO + "/retentions/backfill"): _r("swr:repo:updateRetention", _repo),
    ("POST", M + "/utils/secret"): _r("swr::createLoginSecret", _account),
    ("GET", M + "/projects/{project_id}/quotas"): _r("swr::listQuotas", _account),
    # no seed action lists sync regions: the account-wide read that is closest is the overview
    ("GET", M + "/regions"): _r("swr::getDomainOverview", _account),
    ("POST", NS + "/access"): _r("swr:namespace:createNamespaceAccess", _namespace),
    ("DELETE", NS + "/access"): _r("swr:namespace:deleteNamespaceAccess", _namespace),
    ("GET", NS + "/access"): _r("swr:namespace:getNamespaceAccess", _namespace),
    ("PATCH", NS + "/access"): _r("swr:namespace:updateNamespaceAccess", _namespace),
    ("POST", REPO + "/access"): _r("swr:repo:createRepoAccess", _repo),
    ("DELETE", REPO + "/access"): _r("swr:repo:deleteRepoAccess", _repo),
    ("GET", REPO + "/access"): _r("swr:repo:getRepoAccess", _repo),
    ("PATCH", REPO + "/access"): _r("swr:repo:updateRepoAccess", _repo),
    # enterprise edition: immutable tag rules
    ("POST", INST_NS + "/immutabletagrules"): _r("swr:repository:createImmutableRule", _ent_ns),
    ("DELETE", IMMUTABLE): _r("swr:repository:deleteImmutableRule", _ent_ns),
    ("PUT", IMMUTABLE): _r("swr:repository:updateImmutableRule", _ent_ns),
    ("GET", INST + "/immutabletagrules"): _r("swr:repository:listImmutableRules", _ent_all),
    # enterprise edition: replication (an instance-wide policy)
    ("POST", INST + "/replication/policies"): _r("swr:instance:createReplicationPolicy", _instance),
    ("DELETE", INST + "/replication/policies/{policy_id}"): _r("swr:instance:deleteReplicationPolicy", _instance),
    ("GET", INST + "/replication/policies"): _r("swr:instance:listReplicationPolicies", _instance),
    ("GET", INST + "/replication/policies/{policy_id}"): _r("swr:instance:getReplicationPolicy", _instance),
    ("PUT", INST + "/replication/policies/{policy_id}"): _r("swr:instance:updateReplicationPolicy", _instance),
    ("POST", INST + "/replication/executions"): _r("swr:instance:executeReplicationPolicy", _instance),
    ("GET", INST + "/replication/executions"): _r("swr:instance:listReplicationExecutions", _instance),
    ("GET", REPLICATION_RUN + "/tasks"): _r("swr:instance:listReplicationExecutions", _instance),
    ("GET", REPLICATION_RUN + "/tasks/{task_id}/subtasks"): _r("swr:instance:listReplicationExecutions", _instance),
    ("PUT", REPLICATION_RUN): _r("swr:instance:stopReplicationExecution", _instance),
    ("GET", INST + "/registries"): _r("swr:instance:listRegistries", _instance),
    # enterprise edition: retention policies of a namespace
    ("POST", INST_NS + "/retention/policies"): _r("swr:repository:createRetentionPolicy", _ent_ns),
    ("DELETE", RETENTION): _r("swr:repository:deleteRetentionPolicy", _ent_ns),
    ("GET", RETENTION): _r("swr:repository:getRetentionPolicy", _ent_ns),
    ("PUT", RETENTION): _r("swr:repository:updateRetentionPolicy", _ent_ns),
    ("GET", INST + "/retention/policies"): _r("swr:repository:listRetentionPolicies", _ent_all),
    ("POST", RETENTION + "/executions"): _r("swr:repository:executeRetentionPolicy", _ent_ns),
    ("GET", RETENTION + "/executions"): _r("swr:repository:listRetentionExecutions", _ent_ns),
    ("GET", RETENTION_RUN + "/tasks"): _r("swr:repository:listRetentionExecutions", _ent_ns),
    ("GET", RETENTION_RUN + "/tasks/{task_id}/subtasks"): _r("swr:repository:listRetentionExecutions", _ent_ns),
    # enterprise edition: webhook policies of a namespace
    ("POST", INST_NS + "/webhook/policies"): _r("swr:repository:createWebhookPolicy", _ent_ns),
    ("GET", INST_NS + "/webhook/policies"): _r("swr:repository:listWebhookPolicies", _ent_ns),
    ("GET", INST + "/webhook/policies"): _r("swr:repository:listWebhookPolicies", _ent_all),
    ("GET", WEBHOOK): _r("swr:repository:getWebhookPolicy", _ent_ns),
    ("PUT", WEBHOOK): _r("swr:repository:updateWebhookPolicy", _ent_ns),
    ("DELETE", WEBHOOK): _r("swr:repository:deleteWebhookPolicy", _ent_ns),
    ("GET", WEBHOOK + "/jobs"): _r("swr:repository:listWebhookJobs", _ent_ns),
    # ours: rotating the signing secret and replaying a delivery change the policy's behaviour
    ("POST", WEBHOOK + "/secret"): _r("swr:repository:updateWebhookPolicy", _ent_ns),
    ("POST", WEBHOOK + "/jobs/{job_id}/retry"): _r("swr:repository:updateWebhookPolicy", _ent_ns),
    # ours: IAM administration, on Resource "*" (workers.iam.catalogue)
    ("POST", IAM + "/users"): _r("iam:users:create", _account),
    ("GET", IAM + "/users"): _r("iam:users:list", _account),
    ("GET", IAM + "/users/{user}"): _r("iam:users:get", _account),
    ("DELETE", IAM + "/users/{user}"): _r("iam:users:delete", _account),
    ("POST", IAM + "/groups"): _r("iam:groups:create", _account),
    ("GET", IAM + "/groups"): _r("iam:groups:list", _account),
    ("GET", IAM + "/groups/{group}"): _r("iam:groups:get", _account),
    ("DELETE", IAM + "/groups/{group}"): _r("iam:groups:delete", _account),
    ("PUT", IAM + "/groups/{group}/users/{user}"): _r("iam:groups:addUser", _account),
    ("DELETE", IAM + "/groups/{group}/users/{user}"): _r("iam:groups:removeUser", _account),
    ("POST", IAM + "/users/{user}/access-keys"): _r("iam:accessKeys:create", _account),
    ("GET", IAM + "/users/{user}/access-keys"): _r("iam:accessKeys:list", _account),
    ("PATCH", IAM + "/access-keys/{access_key}"): _r("iam:accessKeys:update", _account),
    ("DELETE", IAM + "/access-keys/{access_key}"): _r("iam:accessKeys:delete", _account),
    ("POST", IAM + "/policies"): _r("iam:policies:create", _account),
    ("GET", IAM + "/policies"): _r("iam:policies:list", _account),
    ("GET", IAM + "/policies/{policy}"): _r("iam:policies:get", _account),
    ("DELETE", IAM + "/policies/{policy}"): _r("iam:policies:delete", _account),
    ("PUT", IAM + "/users/{user}/policies/{policy}"): _r("iam:policies:attach", _account),
    ("DELETE", IAM + "/users/{user}/policies/{policy}"): _r("iam:policies:detach", _account),
    ("PUT", IAM + "/groups/{group}/policies/{policy}"): _r("iam:policies:attach", _account),
    ("DELETE", IAM + "/groups/{group}/policies/{policy}"): _r("iam:policies:detach", _account),
    ("GET", IAM + "/grants"): _r("iam:grants:list", _account),
    ("GET", IAM + "/audit"): _r("iam:audit:list", _account),
}
# fmt: on


def route_action(method: str, template: str) -> RouteAction:
    """The entry for ``method`` (any case) and the route ``template``; raises ``UnknownRoute``."""
    try:
        return ROUTE_ACTIONS[(method.upper(), template)]
    except KeyError:
        raise UnknownRoute(f"no IAM action for {method.upper()} {template}") from None
