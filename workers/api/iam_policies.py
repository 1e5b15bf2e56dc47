"""IAM administration, permissions: policies, attachments, the grants list, the audit trail.

``POST /v3/iam/policies`` takes ``{"name", "description", "document"}``; the document is
validated with ``parse_policy`` and a 400 names the field (``document.Statement[0].Effect: ...``).
System policies (``SWR FullAccess``, ``SWR OperateAccess``, ``SWR ReadOnlyAccess``, the role
``SWR Admin``) are listed with ``"system": true`` and attach by name like custom ones.
``PUT``/``DELETE /v3/iam/{users|groups}/{name}/policies/{policy}`` attach and detach.
``GET /v3/iam/grants?user=&namespace=`` lists SWR grants; ``GET /v3/iam/audit?principal=&action=
&since=&limit=&offset=`` the audit trail, newest first (``since``: ISO 8601 or ``30m``/``2h``/``7d``).
"""

from __future__ import annotations

from aiohttp import web

from workers.api import bodies
from workers.api.authz import invalidate_access
from workers.api.context import api_context
from workers.api.errors import bad_request
from workers.api.iam_errors import iam_errors
from workers.api.paging import list_params, page_of
from workers.iam import audit, grant_store, policy_store
from workers.iam.actions import IAM
from workers.iam.principals import GROUP, USER

AUDIT_PARAMS = frozenset({"principal", "action", "since", "limit", "offset"})

routes = web.RouteTableDef()


@routes.post(IAM + "/policies")
async def create_policy(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request)
    description = bodies.string(body, "description", required=False)
    if "document" not in body:
        raise bad_request("document: required (a policy document: Version, Statement)")
    with iam_errors():
        async with ctx.sessions.begin() as session:
            policy = await policy_store.create_policy(
                session, body.get("name"), description, body["document"], ctx.clock()
            )
    return web.json_response(policy_store.policy_document(policy), status=201)


@routes.get(IAM + "/policies")
async def list_policies(request: web.Request) -> web.Response:
    async with api_context(request).sessions() as session:
        return web.json_response({"policies": await policy_store.list_policies(session)})


@routes.get(IAM + "/policies/{policy}")
async def show_policy(request: web.Request) -> web.Response:
    with iam_errors():
        async with api_context(request).sessions() as session:
            return web.json_response(await policy_store.find_policy(session, request.match_info["policy"]))


@routes.delete(IAM + "/policies/{policy}")
async def delete_policy(request: web.Request) -> web.Response:
    """Deleting a policy detaches it from everyone first."""
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await policy_store.delete_policy(session, request.match_info["policy"])
    invalidate_access(request)
    return web.json_response({})


@routes.put(IAM + "/users/{user}/policies/{policy}")
@routes.put(IAM + "/groups/{group}/policies/{policy}")
async def attach_policy(request: web.Request) -> web.Response:
    ctx = api_context(request)
    principal_type, ref = _principal(request)
    policy = request.match_info["policy"]
    with iam_errors():
        async with ctx.sessions.begin() as session:
            name = await policy_store.attach(session, principal_type, ref, policy, ctx.clock())
    invalidate_access(request)
    return web.json_response({principal_type: name, "policy": policy})


@routes.delete(IAM + "/users/{user}/policies/{policy}")
@routes.delete(IAM + "/groups/{group}/policies/{policy}")
async def detach_policy(request: web.Request) -> web.Response:
    principal_type, ref = _principal(request)
    with iam_errors():
        async with api_context(request).sessions.begin() as session:
            await policy_store.detach(session, principal_type, ref, request.match_info["policy"])
    invalidate_access(request)
    return web.json_response({})


@routes.get(IAM + "/grants")
async def list_grants(request: web.Request) -> web.Response:
    user, namespace = request.query.get("user") or None, request.query.get("namespace") or None
    with iam_errors():
        async with api_context(request).sessions() as session:
            return web.json_response({"grants": await grant_store.list_grants(session, user, namespace)})


@routes.get(IAM + "/audit")
async def list_audit(request: web.Request) -> web.Response:
    ctx = api_context(request)
    params = list_params(request.query, AUDIT_PARAMS)
    page = page_of(params, "time", frozenset({"time"}))
    try:
        since = audit.parse_since(params["since"], ctx.clock()) if "since" in params else None
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    async with ctx.sessions() as session:
        events = await audit.list_audit(
            session,
            principal=params.get("principal"),
            action=params.get("action"),
            since=since,
            limit=page.limit,
            offset=page.offset,
        )
    return web.json_response({"events": events})


def _principal(request: web.Request) -> tuple[str, str]:
    if "user" in request.match_info:
        return USER, request.match_info["user"]
    return GROUP, request.match_info["group"]
