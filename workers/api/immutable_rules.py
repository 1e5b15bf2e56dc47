"""SWR enterprise immutable tag rules: tags retention must never delete.

``POST/PUT/DELETE /v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/immutabletagrules[/{id}]``
with the SDK's ``CreateImmutableRuleBody`` and ``GET /v2/{project_id}/instances/{instance_id}/immutabletagrules``
(``namespace_id``, ``offset``, ``limit``) answering ``ImmutableRule``s. Bodies are validated by
:mod:`workers.retention.immutable` (400 naming the field). Every retention run of the namespace,
basic or enterprise, keeps a digest carrying a tag an enabled rule matches. The registry itself
is not guarded: a client may still overwrite or delete such a tag directly.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.errors import bad_request, not_found
from workers.api.instance import INSTANCE, instance_context, query_int
from workers.api.namespace_ids import ensure_namespace_id, namespace_ids, namespace_name
from workers.db.models import ImmutableRule
from workers.events import grammar
from workers.retention.immutable import ImmutableRuleSpec, parse_immutable_rule
from workers.retention.rules import RuleError

RULES = INSTANCE + "/namespaces/{namespace_name}/immutabletagrules"

routes = web.RouteTableDef()


@routes.post(RULES)
async def create_rule(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    namespace = _namespace(request)
    spec = _spec(await bodies.json_object(request))
    principal = principal_of(request)
    now = ctx.clock()
    rule = ImmutableRule(
        namespace=namespace, creator=principal.user_name if principal else "anonymous", created_at=now, updated_at=now
    )
    _store(rule, spec)
    async with ctx.sessions.begin() as session:
        await ensure_namespace_id(session, namespace, ctx.clock)
        session.add(rule)
    return web.json_response({"id": rule.id}, status=201)


@routes.put(RULES + "/{immutable_rule_id}")
async def update_rule(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    async with ctx.sessions.begin() as session:
        rule = await _find(session, request)
        merged = {**_stored(rule), **body}  # absent fields keep their values
        _store(rule, _spec(merged))
        rule.updated_at = ctx.clock()
    return web.json_response({})


@routes.delete(RULES + "/{immutable_rule_id}")
async def delete_rule(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions.begin() as session:
        await session.delete(await _find(session, request))
    return web.json_response({})


@routes.get(INSTANCE + "/immutabletagrules")
async def list_rules(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    query = select(ImmutableRule)
    async with ctx.sessions() as session:
        if params.get("namespace_id"):
            name = await namespace_name(session, query_int(params, "namespace_id", 0))
            query = query.where(ImmutableRule.namespace == (name or ""))
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        order = (ImmutableRule.namespace, ImmutableRule.priority, ImmutableRule.id)
        rules = (await session.scalars(query.order_by(*order).offset(offset).limit(limit))).all()
        ids = await namespace_ids(session, (r.namespace for r in rules))
    documents = [
        {"id": r.id, "namespace_id": ids.get(r.namespace, 0), "namespace_name": r.namespace, **_stored(r)}
        for r in rules
    ]
    return web.json_response({"immutable_rules": documents, "total": total})


def _namespace(request: web.Request) -> str:
    namespace = request.match_info["namespace_name"]
    if "/" in namespace or not grammar.is_repository_name(namespace):
        raise bad_request(f"namespace_name: {namespace!r} is not a valid namespace")
    return namespace


def _spec(body: dict[str, Any]) -> ImmutableRuleSpec:
    try:
        return parse_immutable_rule(body)
    except RuleError as exc:
        raise bad_request(str(exc)) from None


def _store(rule: ImmutableRule, spec: ImmutableRuleSpec) -> None:
    wire = spec.to_json()
    rule.priority, rule.disabled = wire["priority"], wire["disabled"]
    rule.action, rule.template = wire["action"], wire["template"]
    rule.tag_selectors, rule.scope_selectors = wire["tag_selectors"], wire["scope_selectors"]


def _stored(rule: ImmutableRule) -> dict[str, Any]:
    return {
        "priority": rule.priority,
        "disabled": rule.disabled,
        "action": rule.action,
        "template": rule.template,
        "tag_selectors": rule.tag_selectors,
        "scope_selectors": rule.scope_selectors,
    }


async def _find(session: AsyncSession, request: web.Request) -> ImmutableRule:
    namespace = _namespace(request)
    rule_id = bodies.path_int(request, "immutable_rule_id")
    rule = await session.get(ImmutableRule, rule_id)
    if rule is None or rule.namespace != namespace:
        raise not_found(f"immutable rule {rule_id} not found in namespace {namespace!r}")
    return rule
