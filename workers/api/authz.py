"""Authorization of the management API: who may call which route on which resource.

::

    AK/SK (authn) ──► Principal ──► authorization_middleware ──► handler
                                        │  ROUTE_ACTIONS[(method, template)] → access requests
                                        │  AccessCache: the user's policies (own + groups') and grants
                                        └► workers.iam.authorize.authorize → allow, or 403 SWR.0403

Runs after AK/SK authentication on every ``/v2/`` and ``/v3/`` route. The bootstrap admin
(``RW_ADMIN_ACCESS_KEY``) is allowed everything. Anyone else needs the route in
``ROUTE_ACTIONS`` (a route without an entry is denied, never silently allowed) and a decision
that allows it: an explicit Deny wins, else a policy Allow or a covering grant, else deny.

The scope of every resource URN is this service's ``region`` and, as the account id, its
``project_id`` (``swr:<region>:<project_id>:repo:<ns>/<repo>``): policies name them or use ``*``.
Condition keys: ``g:UserName``, ``g:UserId``, ``g:SourceIp`` (the peer address), ``g:CurrentTime``
(UTC, ISO 8601), ``g:ServiceName`` (``iam`` under ``/v3/iam``, else ``swr``), and on sync routes
``swr:TargetRegion``/``swr:TargetNamespace`` from the body's ``remoteRegionId``/``remoteNamespace``.

A list over the whole account allowed only by a grant answers with what the grants cover: the
middleware leaves them under ``VISIBLE_REPOSITORIES`` for the handler to filter with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.api.authn import KeyRecord, KeyResolver, Principal, principal_of
from workers.api.context import ApiContext
from workers.api.errors import Handler, error_response
from workers.db.models import IamAccessKey, IamUser
from workers.events.grammar import api_repository
from workers.iam.access import AccessCache
from workers.iam.actions import IAM, NS, ROUTE_ACTIONS, M, RouteAction
from workers.iam.authorize import authorize
from workers.iam.urn import Scope
from workers.secrets import SecretBox, SecretError

log = logging.getLogger(__name__)

BOOTSTRAP_ADMIN_ID = "admin"  # workers.api.app.ADMIN; database user ids are 32 hex digits
CODE_FORBIDDEN = "SWR.0403"
ACCESS = web.AppKey("access", AccessCache)

_SYNC_ACTIONS = frozenset({"swr:repo:createAutoSyncRepoJob", "swr:repo:createManualSyncRepoJob"})
_ACCOUNT_LISTS = frozenset({("GET", M + "/repos"), ("GET", "/v3/manage/repos"), ("GET", M + "/shared-repositories")})
_BODY_PARAMS = {("POST", M + "/namespaces"): "namespace", ("POST", NS + "/repos"): "repository"}
_SYNC_CONTEXT = {"remoteRegionId": "swr:TargetRegion", "remoteNamespace": "swr:TargetNamespace"}


@dataclass(frozen=True)
class Authorization:
    """What the middleware decided, for the audit trail."""

    action: str
    resource: str
    decision: str  # admin | allow | explicit-deny | implicit-deny | unknown-route
    detail: str = ""


AUTHORIZATION = web.RequestKey("authorization", Authorization)
VISIBLE_REPOSITORIES = web.RequestKey("visible_repositories", tuple)  # ((namespace, repository | None), ...)


def visible_repositories(request: web.Request) -> tuple[tuple[str, str | None], ...] | None:
    """For a grant-only caller of an account-wide list: the (namespace, repository) their grants cover."""
    return request.get(VISIBLE_REPOSITORIES)


def invalidate_access(request: web.Request) -> None:
    """Called by handlers after changing users, groups, policies or grants."""
    request.app[ACCESS].invalidate()


class DatabaseKeyResolver:
    """The bootstrap admin's key first, then the ``iam_access_keys`` table (one indexed read)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, bootstrap: KeyResolver):
        self._sessions = sessions
        self._box = box
        self._bootstrap = bootstrap

    async def resolve(self, access_key: str) -> KeyRecord | None:
        record = await self._bootstrap.resolve(access_key)
        if record is not None or len(access_key) > 64:
            return record
        query = select(IamAccessKey, IamUser.name).join(IamUser).where(IamAccessKey.access_key == access_key)
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            return None
        key, user_name = row
        try:
            secret = self._box.decrypt(key.secret)
        except SecretError:  # unreadable with the configured keys (RW_SECRET_KEYS changed?)
            log.warning("access key %s: its stored secret cannot be decrypted; it cannot authenticate", access_key)
            return None
        principal = Principal(user_id=key.user_id, user_name=user_name, access_key=key.access_key)
        return KeyRecord(access_key=key.access_key, secret_key=secret, principal=principal, enabled=key.enabled)


def route_template(request: web.Request) -> tuple[str, str]:
    """(method, template) of the matched route; HEAD is checked as GET. Template "" if none matched."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method.upper()
    return method, (resource.canonical if resource is not None else "")


def authorization_middleware(
    ctx: ApiContext, access: AccessCache, *, protected_prefixes: tuple[str, ...] = ("/v2/", "/v3/")
) -> Middleware:
    """Deny with 403 what the caller's policies and grants do not allow (see the module docstring)."""
    scope = Scope(ctx.settings.region, ctx.settings.project_id)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(protected_prefixes):
            return await handler(request)
        principal = principal_of(request)
        if principal is None:  # the AK/SK middleware answers first; never let one through
            return error_response(401, "APIGW.0301", "request is not authenticated")
        key = route_template(request)
        route = ROUTE_ACTIONS.get(key)
        if route is None:
            if principal.user_id == BOOTSTRAP_ADMIN_ID:
                request[AUTHORIZATION] = Authorization("", "", "admin")
                return await handler(request)
            message = f"no IAM action is defined for {key[0]} {key[1] or request.path}: denied"
            request[AUTHORIZATION] = Authorization("", "", "unknown-route", message)
            return error_response(403, CODE_FORBIDDEN, message)
        requests = route.requests(scope, await _params(request, key), await _context(ctx, request, principal, route))
        if principal.user_id == BOOTSTRAP_ADMIN_ID:
            request[AUTHORIZATION] = Authorization(requests[0].action, requests[0].resource, "admin")
            return await handler(request)
        user_access = await access.access_of(principal.user_id)
        decision = authorize(requests, user_access.policies, user_access.grants)
        explained = decision.explain()
        request[AUTHORIZATION] = Authorization(
            decision.request.action, decision.request.resource, decision.outcome.value, explained
        )
        if not decision.allowed:
            return error_response(403, CODE_FORBIDDEN, explained)
        if decision.grant is not None and key in _ACCOUNT_LISTS:
            request[VISIBLE_REPOSITORIES] = tuple((g.namespace, g.repository) for g in user_access.grants)
        return await handler(request)

    return middleware


async def _params(request: web.Request, key: tuple[str, str]) -> dict[str, str]:
    params = {
        name: api_repository(value) if name == "repository" else value for name, value in request.match_info.items()
    }
    if key in _ACCOUNT_LISTS:
        namespace = request.query.get("namespace") or _filter_value(request.query.get("filter"), "namespace")
        if namespace:
            params["namespace"] = namespace
    body_param = _BODY_PARAMS.get(key)
    if body_param:
        value = (await _json_body(request)).get(body_param)
        if isinstance(value, str) and value:
            params[body_param] = value
    return params


async def _context(ctx: ApiContext, request: web.Request, principal: Principal, route: RouteAction) -> dict[str, str]:
    context = {
        "g:UserName": principal.user_name,
        "g:UserId": principal.user_id,
        "g:CurrentTime": ctx.clock().isoformat().replace("+00:00", "Z"),
        "g:ServiceName": "iam" if request.path.startswith(IAM + "/") or request.path == IAM else "swr",
    }
    if request.remote:
        context["g:SourceIp"] = request.remote
    if route.action in _SYNC_ACTIONS:
        body = await _json_body(request)
        for field, condition_key in _SYNC_CONTEXT.items():
            if isinstance(body.get(field), str) and body[field]:
                context[condition_key] = body[field]
    return context


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    """The JSON object body, or {} (the handler reports a bad body). aiohttp caches what it read."""
    try:
        body = orjson.loads(await request.read() or b"null")
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _filter_value(raw: str | None, name: str) -> str | None:
    """``name``'s value in SWR's ``filter=key::value|...`` query, without judging the rest."""
    for part in (raw or "").split("|"):
        key, sep, value = part.partition("::")
        if sep and key == name and value:
            return value
    return None
