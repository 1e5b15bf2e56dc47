"""Request ids and the audit record of every management call.

``audit_middleware`` is the outermost middleware: it gives every request an id (answered as
``X-Request-Id`` by ``add_request_id`` on every response, errors included) and, for each
``/v2/`` and ``/v3/`` call, writes one audit row once the answer is known: who (principal,
access key, source IP), what (method, route template, path, the IAM action and resource), and
how it ended (HTTP status, the authorization decision and its explanation). A call that could
not be authenticated is recorded too, with the access key it claimed.

The write is one INSERT after the handler. When it fails the call still answers (the work is
done and cannot be undone); the failure is logged.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Middleware

from workers.api.authn import principal_of
from workers.api.authz import AUTHORIZATION, route_template
from workers.api.context import ApiContext
from workers.api.errors import Handler
from workers.iam.audit import ApiCall, record_api_call

log = logging.getLogger(__name__)

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_CLAIMED_KEY = re.compile(r"Access=([^,\s]{1,64})")


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` signal: every response carries its request's id."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id


def audit_middleware(ctx: ApiContext, *, audited_prefixes: tuple[str, ...] = ("/v2/", "/v3/")) -> Middleware:
    """Assign the request id; record each call under ``audited_prefixes`` once it is answered."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = uuid.uuid4().hex
        if not request.path.startswith(audited_prefixes):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect the error middleware let through
            await _record(ctx, request, exc.status)
            raise
        await _record(ctx, request, response.status)
        return response

    return middleware


async def _record(ctx: ApiContext, request: web.Request, status: int) -> None:
    try:
        async with ctx.sessions.begin() as session:
            await record_api_call(session, _call(request, status), ctx.clock())
    except Exception:
        log.exception("could not write the audit record of %s %s", request.method, request.path)


def _call(request: web.Request, status: int) -> ApiCall:
    principal = principal_of(request)
    decided = request.get(AUTHORIZATION)
    method, template = route_template(request)
    if principal is not None:
        who = (principal.user_name, principal.user_id, principal.access_key)
    else:
        claimed = _CLAIMED_KEY.search(request.headers.get("Authorization", ""))
        who = ("", "", claimed.group(1) if claimed else "")
    decision = decided.decision if decided else ("unauthenticated" if status == 401 else "")
    return ApiCall(
        request_id=request[REQUEST_ID],
        method=request.method,
        route=f"{method} {template}" if template else "",
        path=request.path,
        principal=who[0],
        principal_id=who[1],
        access_key=who[2],
        action=decided.action if decided else "",
        resource=decided.resource if decided else "",
        source_ip=request.remote or "",
        status=status,
        decision=decision,
        detail=decided.detail if decided else "",
    )
