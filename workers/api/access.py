"""SWR grants: ``/v2/manage/namespaces/{namespace}[/repos/{repository}]/access``.

The official SDK's ``create_namespace_auth``/``show_namespace_auth``/``update_namespace_auth``/
``delete_namespace_auth`` and the ``*_user_repository_auth`` calls. Create and update take a
``list[UserAuth]`` (``{"user_id", "user_name", "auth": 1|3|7}``; a ``{"users": [...]}`` object
is accepted too); a user is found by ``user_id``, else by ``user_name``. Create sets the level
whether or not the user had one; update requires one. Delete takes the users' ids (or names).
Show answers ``{id, name, creator_name, self_auth, others_auths}``: the caller's effective
level (a namespace grant counts on its repositories; the admin has 7) and everyone else's.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select

from workers.api.authn import principal_of
from workers.api.authz import BOOTSTRAP_ADMIN_ID, invalidate_access
from workers.api.context import api_context
from workers.api.errors import ApiError, bad_request
from workers.api.iam_errors import iam_errors
from workers.db.models import IamGrant, Namespace
from workers.events import grammar
from workers.iam.grant_store import UserAuth, auth_level, grants_on, put_grants, revoke_grants
from workers.iam.grants import AuthLevel

NAMESPACE_ACCESS = "/v2/manage/namespaces/{namespace}/access"
REPOSITORY_ACCESS = "/v2/manage/namespaces/{namespace}/repos/{repository}/access"
MAX_ENTRIES = 100

routes = web.RouteTableDef()


@routes.post(NAMESPACE_ACCESS)
@routes.post(REPOSITORY_ACCESS)
async def create_access(request: web.Request) -> web.Response:
    return await _put(request, update=False, status=201)


@routes.patch(NAMESPACE_ACCESS)
@routes.patch(REPOSITORY_ACCESS)
async def update_access(request: web.Request) -> web.Response:
    return await _put(request, update=True, status=200)


@routes.delete(NAMESPACE_ACCESS)
@routes.delete(REPOSITORY_ACCESS)
async def delete_access(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _target(request)
    refs = [_user_ref(item, f"[{index}]") for index, item in enumerate(await _entries(request))]
    with iam_errors():
        async with ctx.sessions.begin() as session:
            await revoke_grants(session, namespace, repository, refs)
    invalidate_access(request)
    return web.json_response({})


@routes.get(NAMESPACE_ACCESS)
@routes.get(REPOSITORY_ACCESS)
async def show_access(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _target(request)
    principal = principal_of(request)
    async with ctx.sessions() as session:
        namespace_id = await session.scalar(select(Namespace.id).where(Namespace.name == namespace))
        granted = await grants_on(session, namespace, repository)
        own = []
        if principal is not None and principal.user_id != BOOTSTRAP_ADMIN_ID:
            own = list(
                await session.scalars(
                    select(IamGrant.auth).where(
                        IamGrant.user_id == principal.user_id,
                        IamGrant.namespace == namespace,
                        IamGrant.repository.in_(("", repository)),
                    )
                )
            )
    if principal is None or principal.user_id == BOOTSTRAP_ADMIN_ID:
        self_level = int(AuthLevel.MANAGE)
    else:
        self_level = max(own, default=0)
    me = principal.user_id if principal else ""
    document: dict[str, Any] = {
        "id": namespace_id or 0,
        "name": f"{namespace}/{repository}" if repository else namespace,
        "creator_name": "",
        "self_auth": {"user_id": me, "user_name": principal.user_name if principal else "", "auth": self_level},
        "others_auths": [
            {"user_id": grant.user_id, "user_name": name, "auth": grant.auth}
            for grant, name in granted
            if grant.user_id != me
        ],
    }
    return web.json_response(document)


async def _put(request: web.Request, *, update: bool, status: int) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _target(request)
    entries = [_user_auth(item, f"[{index}]") for index, item in enumerate(await _entries(request))]
    principal = principal_of(request)
    creator = principal.user_name if principal else ""
    with iam_errors():
        async with ctx.sessions.begin() as session:
            await put_grants(session, namespace, repository, entries, creator, ctx.clock(), update=update)
    invalidate_access(request)
    return web.json_response({}, status=status)


def _target(request: web.Request) -> tuple[str, str]:
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info.get("repository", ""))
    if not grammar.is_repository_name(f"{namespace}/{repository or 'x'}"):
        raise bad_request(f"namespace: {namespace!r} (repository {repository!r}) is not a valid name")
    return namespace, repository


async def _entries(request: web.Request) -> list[Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body: not valid JSON ({exc})") from None
    if isinstance(body, dict) and "users" in body:
        body = body["users"]
    if not isinstance(body, list) or not body:
        raise bad_request("request body: expected a non-empty list of users")
    if len(body) > MAX_ENTRIES:
        raise ApiError(413, "SWR.0413", f"request body: at most {MAX_ENTRIES} users at once")
    return body


def _user_auth(item: object, field: str) -> UserAuth:
    if not isinstance(item, dict):
        raise bad_request(f"{field}: expected an object with user_id, user_name and auth")
    user_id, user_name = item.get("user_id") or "", item.get("user_name") or ""
    if not isinstance(user_id, str) or not isinstance(user_name, str) or not (user_id or user_name):
        raise bad_request(f"{field}.user_id: a user id or user_name is required")
    with iam_errors():
        level = auth_level(item.get("auth"), f"{field}.auth")
    return UserAuth(field, user_id, user_name, level)


def _user_ref(item: object, field: str) -> str:
    if isinstance(item, str) and item:
        return item
    if isinstance(item, dict):
        ref = item.get("user_id") or item.get("user_name")
        if isinstance(ref, str) and ref:
            return ref
    raise bad_request(f"{field}: expected a user id")
