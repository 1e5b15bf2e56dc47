"""SWR enterprise webhook policies and their delivery jobs.

``/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/webhook/policies[/{id}]``,
``.../webhook/policies/{id}/jobs`` and ``/v2/{project_id}/instances/{instance_id}/webhook/policies``
with the SDK's ``CreateWebhookPolicyRequestBody``, ``WebhookPolicyDetail`` and ``Job``.
Auth headers and signing secrets are encrypted at rest and masked in answers. Extensions:
``signing_secret`` in the create answer, ``retry_schedule`` (seconds) in bodies,
``POST .../policies/{id}/secret`` (rotate; the previous secret keeps signing until the next
rotation) and ``POST .../jobs/{job_id}/retry`` (replay).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.context import ApiContext
from workers.api.errors import ApiError, bad_request, not_found
from workers.api.instance import INSTANCE, instance_context, iso_time, query_int
from workers.api.webhook_bodies import policy_fields
from workers.db import versions
from workers.db.models import Delivery, Namespace, WebhookPolicy
from workers.events import grammar
from workers.secrets import mask
from workers.triggers import store
from workers.triggers.signing import new_signing_secret

POLICIES = INSTANCE + "/namespaces/{namespace_name}/webhook/policies"
JOB_STATUS = {
    store.PENDING: "Pending",
    store.RUNNING: "Running",
    store.SUCCEEDED: "Success",
    store.FAILED: "Error",
    store.CANCELLED: "Stopped",
}
ORDER_COLUMNS = {
    "created_at": WebhookPolicy.created_at,
    "updated_at": WebhookPolicy.updated_at,
    "name": WebhookPolicy.name,
    "id": WebhookPolicy.id,
}

routes = web.RouteTableDef()


@routes.post(POLICIES)
async def create_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    namespace = request.match_info["namespace_name"]
    if "/" in namespace or not grammar.is_repository_name(namespace):
        raise bad_request(f"namespace_name: {namespace!r} is not a valid namespace")
    fields = await policy_fields(await bodies.json_object(request), ctx, existing=None)
    secret = new_signing_secret()
    now = ctx.clock()
    principal = principal_of(request)
    policy = WebhookPolicy(
        namespace=namespace,
        signing_secrets=ctx.secret_box.encrypt(orjson.dumps([secret]).decode()),
        creator=principal.user_name if principal else "anonymous",
        created_at=now,
        updated_at=now,
    )
    fields.apply(policy)
    try:
        async with ctx.sessions.begin() as session:
            await _namespace_id(session, namespace, ctx)
            session.add(policy)
            await versions.bump(session, versions.TRIGGER_RULES)
    except IntegrityError:
        raise ApiError(409, "SWR.0409", f"webhook policy {fields.name!r} already exists in {namespace}") from None
    return web.json_response({"id": policy.id, "signing_secret": secret}, status=201)


@routes.get(INSTANCE + "/webhook/policies")
async def list_policies(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    query = select(WebhookPolicy)
    if params.get("name"):
        query = query.where(WebhookPolicy.name.contains(params["name"], autoescape=True))
    async with ctx.sessions() as session:
        if params.get("namespace_id"):
            namespace = await session.get(Namespace, query_int(params, "namespace_id", 0))
            query = query.where(WebhookPolicy.namespace == (namespace.name if namespace else ""))
        return await _policy_page(session, ctx, query, params)


@routes.get(POLICIES)
async def list_namespace_policies(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    query = select(WebhookPolicy).where(WebhookPolicy.namespace == request.match_info["namespace_name"])
    async with ctx.sessions() as session:
        return await _policy_page(session, ctx, query, request.query)


async def _policy_page(session: AsyncSession, ctx: ApiContext, query: Any, params: Any) -> web.Response:
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    column = ORDER_COLUMNS.get(params.get("order_column") or "created_at")
    if column is None:
        raise bad_request(f"order_column: expected one of {', '.join(ORDER_COLUMNS)}")
    ordering = column.asc() if (params.get("order_type") or "desc").lower() == "asc" else column.desc()
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    policies = (await session.scalars(query.order_by(ordering).offset(offset).limit(limit))).all()
    documents = [await _policy_document(session, ctx, p) for p in policies]
    return web.json_response({"policies": documents, "total": total or 0})


@routes.get(POLICIES + "/{policy_id}")
async def show_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions() as session:
        policy = await _find(session, request)
        return web.json_response(await _policy_document(session, ctx, policy))


@routes.put(POLICIES + "/{policy_id}")
async def update_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    try:
        async with ctx.sessions.begin() as session:
            policy = await _find(session, request)
            fields = await policy_fields(body, ctx, existing=policy)
            fields.apply(policy)
            await versions.bump(session, versions.TRIGGER_RULES)
            policy.updated_at = ctx.clock()
            if not policy.enabled:
                await store.cancel_pending(session, ctx.clock(), policy_id=policy.id, reason="policy disabled")
    except IntegrityError:
        raise ApiError(409, "SWR.0409", "a webhook policy with that name already exists in the namespace") from None
    return web.json_response({})


@routes.delete(POLICIES + "/{policy_id}")
async def delete_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions.begin() as session:
        policy = await _find(session, request)
        await store.cancel_pending(session, ctx.clock(), policy_id=policy.id, reason="policy deleted")
        await session.delete(policy)
        await versions.bump(session, versions.TRIGGER_RULES)
    return web.json_response({})


@routes.post(POLICIES + "/{policy_id}/secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret; until the next rotation both sign every request."""
    ctx = instance_context(request)
    secret = new_signing_secret()
    async with ctx.sessions.begin() as session:
        policy = await _find(session, request)
        previous = orjson.loads(ctx.secret_box.decrypt(policy.signing_secrets))[:1]
        policy.signing_secrets = ctx.secret_box.encrypt(orjson.dumps([secret, *previous]).decode())
        policy.updated_at = ctx.clock()
        await versions.bump(session, versions.TRIGGER_RULES)  # deliverers drop their cached secrets
    return web.json_response({"id": policy.id, "signing_secret": secret}, status=201)


@routes.get(POLICIES + "/{policy_id}/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    async with ctx.sessions() as session:
        policy = await _find(session, request)
        query = select(Delivery).where(Delivery.policy_id == policy.id)
        if params.get("status"):
            query = query.where(Delivery.status.in_(_statuses(params["status"])))
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        jobs = (await session.scalars(query.order_by(Delivery.id.desc()).offset(offset).limit(limit))).all()
    return web.json_response({"jobs": [_job_document(j) for j in jobs], "total": total or 0})


@routes.post(POLICIES + "/{policy_id}/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    job_id = bodies.path_int(request, "job_id")
    async with ctx.sessions.begin() as session:
        policy = await _find(session, request)
        job = await session.get(Delivery, job_id)
        if job is None or job.policy_id != policy.id:
            raise not_found(f"job {job_id} not found for webhook policy {policy.id}")
        if not await store.replay(session, job_id, ctx.clock()):
            raise ApiError(409, "SWR.0409", f"job {job_id} is still in progress")
    return web.json_response({"id": job_id, "status": JOB_STATUS[store.PENDING]}, status=202)


async def _find(session: AsyncSession, request: web.Request) -> WebhookPolicy:
    policy_id = bodies.path_int(request, "policy_id")
    namespace = request.match_info["namespace_name"]
    policy = await session.get(WebhookPolicy, policy_id)
    if policy is None or policy.namespace != namespace:
        raise not_found(f"webhook policy {policy_id} not found in namespace {namespace!r}")
    return policy


async def _namespace_id(session: AsyncSession, name: str, ctx: ApiContext) -> int:
    existing = await session.scalar(select(Namespace.id).where(Namespace.name == name))
    if existing is not None:
        return existing
    async with session.begin_nested():
        namespace = Namespace(name=name, created_at=ctx.clock())
        session.add(namespace)
    return namespace.id


async def _policy_document(session: AsyncSession, ctx: ApiContext, policy: WebhookPolicy) -> dict[str, Any]:
    namespace_id = await session.scalar(select(Namespace.id).where(Namespace.name == policy.namespace))
    targets = [
        {
            "type": t.get("type", "http"),
            "address": t["address"],
            "auth_header": mask(_plain_header(ctx, t)) or "",
            "skip_cert_verify": bool(t.get("skip_cert_verify")),
            "address_type": t.get("address_type", "internet"),
            "enabled": not t.get("disabled_at"),
            "disabled_at": t.get("disabled_at"),
        }
        for t in policy.targets
    ]
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "targets": targets,
        "event_types": list(policy.event_types),
        "enabled": policy.enabled,
        "namespace_id": namespace_id or 0,
        "namespace_name": policy.namespace,
        "creator": policy.creator,
        "created_at": iso_time(policy.created_at),
        "updated_at": iso_time(policy.updated_at),
        "scope_rules": policy.scope_rules,
        "retry_schedule": policy.retry_schedule_s,
    }


def _plain_header(ctx: ApiContext, target: dict[str, Any]) -> str | None:
    token = target.get("auth_header")
    return ctx.secret_box.decrypt(token) if token else None


def _job_document(job: Delivery) -> dict[str, Any]:
    return {
        "id": job.id,
        "policy_id": job.policy_id,
        "event_type": job.event_type,
        "notify_type": "http",
        "status": JOB_STATUS.get(job.status, job.status),
        "status_text": job.detail[:200],
        "job_detail": job.payload,
        "created_at": iso_time(job.created_at),
        "updated_at": iso_time(job.updated_at),
        "target": job.target,
        "attempts": job.attempts,
        "last_status_code": job.last_status_code,
        "latency_ms": job.latency_ms,
        "next_attempt_at": iso_time(job.next_attempt_at) if job.status == store.PENDING else None,
    }


def _statuses(value: str) -> list[str]:
    by_name = {v.lower(): k for k, v in JOB_STATUS.items()}
    wanted = [by_name.get(part.strip().lower(), part.strip().lower()) for part in value.split(",")]
    unknown = [w for w in wanted if w not in JOB_STATUS]
    if unknown:
        raise bad_request(f"status: unknown status {unknown[0]!r}; expected one of {', '.join(JOB_STATUS.values())}")
    return wanted
