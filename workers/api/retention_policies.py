"""SWR enterprise retention policies of a namespace (Harbor's tag retention).

``/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/retention/policies[/{policy_id}]``
(create, show, update with PUT, delete) and ``/v2/{project_id}/instances/{instance_id}/retention/policies``
(list; ``name`` substring, ``namespace_id``, paging) with the SDK's
``CreateRetentionPolicyRequestBody`` (``algorithm`` "or", ``rules[]`` of ``latestPushedK``,
``latestPulledN``, ``nDaysSinceLastPush``, ``nDaysSinceLastPull``, ``always`` with tag and
repository selectors, see :mod:`workers.retention.rules`; ``trigger`` ``{"type": "manual" |
"scheduled", "trigger_settings": {"cron"}}``) and ``ImageRetention``. A bad rule is a 400 whose
message starts with the field (``rules[0].params.latestPushedK: ...``). A scheduled policy runs on
its cron (five fields, or Harbor's six with leading seconds); any policy runs on request (see
:mod:`workers.api.retention_executions`). Saving does not run it. Extensions in answers:
``creator``, ``created_at``, ``updated_at``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.errors import ApiError, bad_request, not_found
from workers.api.instance import INSTANCE, instance_context, iso_time, query_int
from workers.api.namespace_ids import ensure_namespace_id, namespace_ids, namespace_name
from workers.db.models import RetentionPolicy
from workers.events import grammar
from workers.replication.policies import five_field_cron
from workers.retention.rules import RuleError, enterprise_rules_to_json, parse_enterprise_rules

POLICIES = INSTANCE + "/namespaces/{namespace_name}/retention/policies"
TRIGGER_TYPES = ("manual", "scheduled")

routes = web.RouteTableDef()


@routes.post(POLICIES)
async def create_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    namespace = _namespace(request)
    body = await bodies.json_object(request)
    principal = principal_of(request)
    now = ctx.clock()
    policy = RetentionPolicy(
        edition="enterprise",
        namespace=namespace,
        repository=None,
        creator=principal.user_name if principal else "anonymous",
        created_at=now,
        updated_at=now,
    )
    _apply(policy, body, creating=True)
    async with ctx.sessions.begin() as session:
        await _check_unique(session, policy)
        await ensure_namespace_id(session, namespace, ctx.clock)
        session.add(policy)
    return web.json_response({"id": policy.id}, status=201)


@routes.get(INSTANCE + "/retention/policies")
async def list_policies(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    query = select(RetentionPolicy).where(RetentionPolicy.edition == "enterprise")
    if params.get("name"):
        query = query.where(RetentionPolicy.name.contains(params["name"], autoescape=True))
    async with ctx.sessions() as session:
        if params.get("namespace_id"):
            name = await namespace_name(session, query_int(params, "namespace_id", 0))
            query = query.where(RetentionPolicy.namespace == (name or ""))
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        policies = (await session.scalars(query.order_by(RetentionPolicy.id).offset(offset).limit(limit))).all()
        ids = await namespace_ids(session, (p.namespace for p in policies))
    return web.json_response({"total": total, "retentions": [policy_document(p, ids) for p in policies]})


@routes.get(POLICIES + "/{policy_id}")
async def show_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions() as session:
        policy = await find_policy(session, request)
        ids = await namespace_ids(session, [policy.namespace])
    return web.json_response(policy_document(policy, ids))


@routes.put(POLICIES + "/{policy_id}")
async def update_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    async with ctx.sessions.begin() as session:
        policy = await find_policy(session, request)
        _apply(policy, body, creating=False)
        await _check_unique(session, policy)
        policy.updated_at = ctx.clock()
    return web.json_response({})


@routes.delete(POLICIES + "/{policy_id}")
async def delete_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions.begin() as session:
        await session.delete(await find_policy(session, request))
    return web.json_response({})


async def find_policy(session: AsyncSession, request: web.Request) -> RetentionPolicy:
    """The enterprise policy named by the path, in the path's namespace; else 404."""
    namespace = _namespace(request)
    policy_id = bodies.path_int(request, "policy_id")
    policy = await session.get(RetentionPolicy, policy_id)
    if policy is None or policy.edition != "enterprise" or policy.namespace != namespace:
        raise not_found(f"retention policy {policy_id} not found in namespace {namespace!r}")
    return policy


def policy_document(policy: RetentionPolicy, ids: dict[str, int]) -> dict[str, Any]:
    """The SDK's ``ImageRetention`` (and ``ShowInstanceRetentionPolicyResponse``)."""
    return {
        "id": policy.id,
        "algorithm": policy.algorithm,
        "rules": [{"id": number, **rule} for number, rule in enumerate(policy.rules, start=1)],
        "trigger": {"type": "scheduled" if policy.cron else "manual", "trigger_settings": {"cron": policy.cron}},
        "enabled": policy.enabled,
        "name": policy.name,
        "namespace_id": ids.get(policy.namespace, 0),
        "namespace_name": policy.namespace,
        "creator": policy.creator,
        "created_at": iso_time(policy.created_at),
        "updated_at": iso_time(policy.updated_at),
    }


def _namespace(request: web.Request) -> str:
    namespace = request.match_info["namespace_name"]
    if "/" in namespace or not grammar.is_repository_name(namespace):
        raise bad_request(f"namespace_name: {namespace!r} is not a valid namespace")
    return namespace


def _apply(policy: RetentionPolicy, body: dict[str, Any], *, creating: bool) -> None:
    """Validate ``body`` onto ``policy``; on update, absent fields keep their values."""

    def given(field: str) -> bool:
        return creating or field in body

    if given("name"):
        policy.name = bodies.string(body, "name", max_length=255)
    if given("algorithm"):
        policy.algorithm = bodies.string(body, "algorithm", required=False, default="or", choices=("or",))
    if given("rules"):
        try:
            policy.rules = enterprise_rules_to_json(parse_enterprise_rules(body.get("rules")))
        except RuleError as exc:
            raise bad_request(str(exc)) from None
    if given("trigger"):
        policy.cron = _cron(body.get("trigger"))
    if given("enabled"):
        policy.enabled = bodies.boolean(body, "enabled", True)


def _cron(raw: object) -> str:
    """The stored cron of a ``TriggerConfig``: empty for a manual trigger."""
    if raw is None:
        return ""
    if not isinstance(raw, dict):
        raise bad_request("trigger: expected an object {type, trigger_settings}")
    kind = raw.get("type") or "manual"
    if kind not in TRIGGER_TYPES:
        raise bad_request(f"trigger.type: expected one of {', '.join(TRIGGER_TYPES)}, got {kind!r}")
    settings = raw.get("trigger_settings") or {}
    cron = settings.get("cron") if isinstance(settings, dict) else None
    if kind == "manual":
        return ""
    if not isinstance(cron, str) or not cron.strip():
        raise bad_request("trigger.trigger_settings.cron: required for a scheduled trigger")
    try:
        CronTrigger.from_crontab(five_field_cron(cron.strip()))
    except ValueError as exc:
        raise bad_request(f"trigger.trigger_settings.cron: {exc}") from None
    return cron.strip()


async def _check_unique(session: AsyncSession, policy: RetentionPolicy) -> None:
    clash = await session.scalar(
        select(RetentionPolicy.id).where(
            RetentionPolicy.edition == "enterprise",
            RetentionPolicy.namespace == policy.namespace,
            RetentionPolicy.name == policy.name,
            RetentionPolicy.id != (policy.id or 0),
        )
    )
    if clash is not None:
        raise ApiError(409, "SWR.0409", f"retention policy {policy.name!r} already exists in {policy.namespace}")
