"""IAM administration, principals: ``/v3/iam/users``, ``/v3/iam/groups``, access keys.

Authorised like every route (``iam:users:create``, ... in ``ROUTE_ACTIONS``): the bootstrap
admin, or a user whose policies allow the action. A new access key's secret is in the create
answer only (``secret_key``); it is stored encrypted and never shown again. Every change
invalidates the cached access of this process's users (``invalidate_access``).
"""

from __future__ import annotations

from aiohttp import web

from workers.api import bodies
from workers.api.authz import invalidate_access
from workers.api.context import api_context
from workers.api.errors import bad_request
from workers.api.iam_errors import iam_errors
from workers.iam import principals
from workers.iam.actions import IAM

routes = web.RouteTableDef()


@routes.post(IAM + "/users")
async def create_user(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request)
    description = bodies.string(body, "description", required=False)
    groups = body.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise bad_request("groups: expected a list of group names")
    with iam_errors():
        async with ctx.sessions.begin() as session:
            user = await principals.create_user(session, body.get("name"), description, ctx.clock())
            await session.flush()
            for group in groups:
                await principals.add_member(session, group, user.id)
            document = await principals.user_document(session, user)
    invalidate_access(request)
    return web.json_response(document, status=201)


@routes.get(IAM + "/users")
async def list_users(request: web.Request) -> web.Response:
    async with api_context(request).sessions() as session:
        users = await principals.list_users(session)
        documents = [await principals.user_document(session, u, details=False) for u in users]
    return web.json_response({"users": documents})


@routes.get(IAM + "/users/{user}")
async def show_user(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions() as session:
            user = await principals.find_user(session, request.match_info["user"])
            return web.json_response(await principals.user_document(session, user))


@routes.delete(IAM + "/users/{user}")
async def delete_user(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await principals.delete_user(session, request.match_info["user"])
    invalidate_access(request)
    return web.json_response({})


@routes.post(IAM + "/groups")
async def create_group(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request)
    description = bodies.string(body, "description", required=False)
    with iam_errors():
        async with ctx.sessions.begin() as session:
            group = await principals.create_group(session, body.get("name"), description, ctx.clock())
            await session.flush()
            document = await principals.group_document(session, group)
    return web.json_response(document, status=201)


@routes.get(IAM + "/groups")
async def list_groups(request: web.Request) -> web.Response:
    async with api_context(request).sessions() as session:
        groups = await principals.list_groups(session)
        documents = [await principals.group_document(session, g) for g in groups]
    return web.json_response({"groups": documents})


@routes.get(IAM + "/groups/{group}")
async def show_group(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions() as session:
            group = await principals.find_group(session, request.match_info["group"])
            return web.json_response(await principals.group_document(session, group))


@routes.delete(IAM + "/groups/{group}")
async def delete_group(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await principals.delete_group(session, request.match_info["group"])
    invalidate_access(request)
    return web.json_response({})


@routes.put(IAM + "/groups/{group}/users/{user}")
async def add_member(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            group, _ = await principals.add_member(session, request.match_info["group"], request.match_info["user"])
            await session.flush()
            document = await principals.group_document(session, group)
    invalidate_access(request)
    return web.json_response(document)


@routes.delete(IAM + "/groups/{group}/users/{user}")
async def remove_member(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await principals.remove_member(session, request.match_info["group"], request.match_info["user"])
    invalidate_access(request)
    return web.json_response({})


@routes.post(IAM + "/users/{user}/access-keys")
async def create_access_key(request: web.Request) -> web.Response:
    ctx = api_context(request)
    with iam_errors():
        async with ctx.sessions.begin() as session:
            key, user, secret = await principals.create_access_key(
                session, ctx.secret_box, request.match_info["user"], ctx.clock()
            )
    return web.json_response(principals.key_document(key, user, secret), status=201)


@routes.get(IAM + "/users/{user}/access-keys")
async def list_access_keys(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions() as session:
            user, keys = await principals.list_access_keys(session, request.match_info["user"])
    return web.json_response({"access_keys": [principals.key_document(k, user) for k in keys]})


@routes.patch(IAM + "/access-keys/{access_key}")
async def update_access_key(request: web.Request) -> web.Response:
    """``{"enabled": false}`` disables the key at once (its signatures get 401); ``true`` enables it."""
    ctx = api_context(request)
    body = await bodies.json_object(request)
    if "enabled" not in body:
        raise bad_request("enabled: required")
    enabled = bodies.boolean(body, "enabled", True)
    with iam_errors():
        async with ctx.sessions.begin() as session:
            key = await principals.set_access_key_enabled(
                session, request.match_info["access_key"], enabled, ctx.clock()
            )
            user = await principals.find_user(session, key.user_id)
    return web.json_response(principals.key_document(key, user))


@routes.delete(IAM + "/access-keys/{access_key}")
async def delete_access_key(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await principals.delete_access_key(session, request.match_info["access_key"])
    return web.json_response({})
