"""SWR enterprise replication: policies, executions, tasks, sub-tasks (and registries, an extension).

``/v2/{project_id}/instances/{instance_id}/replication/policies[/{policy_id}]`` with the SDK's
``CreateReplicationPolicyRequestBody``/``ReplicationPolicy``; ``.../replication/executions``
(start with ``{policy_id}``, list, stop with PUT) and their ``tasks`` and ``subtasks``.
Registries are numbered: ``GET .../registries`` lists ``{id, name (region id), url}``.
Extensions on a policy: ``replicate_deletion``; on a filter: ``kind`` and ``decoration``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.context import ApiContext
from workers.api.errors import ApiError, bad_request, not_found
from workers.api.instance import INSTANCE, instance_context, iso_time, query_int
from workers.db import versions
from workers.db.models import ReplicationExecution, ReplicationJob, ReplicationPolicy
from workers.events import grammar
from workers.maintenance.commands import RUN_REPLICATION_POLICY, Command
from workers.replication import store
from workers.replication.executions import registry_ids, start_execution, summarise
from workers.replication.policies import TRIGGER_TYPES, PolicyError, five_field_cron, parse_filters
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage

POLICIES = INSTANCE + "/replication/policies"
EXECUTIONS = INSTANCE + "/replication/executions"
TASK_STATUS = {
    store.WAITING: "Pending",
    store.RUNNING: "InProgress",
    store.SUCCESS: "Succeed",
    store.EXISTED: "Succeed",
    store.FAILED: "Failed",
    store.TIMEOUT: "Failed",
    store.CANCEL: "Stopped",
}

routes = web.RouteTableDef()


@routes.get(INSTANCE + "/registries")
async def list_registries(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions.begin() as session:
        ids = await registry_ids(session, list(ctx.settings.regions))
    body = [{"id": ids[r], "name": r, "url": ctx.settings.regions[r].registry} for r in sorted(ctx.settings.regions)]
    return web.json_response({"registries": body, "total": len(body)})


@routes.post(POLICIES)
async def create_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    principal = principal_of(request)
    now = ctx.clock()
    policy = ReplicationPolicy(
        creator=principal.user_name if principal else "anonymous", created_at=now, updated_at=now
    )
    try:
        async with ctx.sessions.begin() as session:
            await _apply(ctx, session, policy, body, creating=True)
            session.add(policy)
            await versions.bump(session, versions.REPLICATION_RULES)
    except IntegrityError:
        raise ApiError(409, "SWR.0409", f"replication policy {policy.name!r} already exists") from None
    return web.json_response({"id": policy.id}, status=201)


@routes.get(POLICIES)
async def list_policies(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    query = select(ReplicationPolicy)
    if params.get("name"):
        query = query.where(ReplicationPolicy.name.contains(params["name"], autoescape=True))
    if params.get("registry_id"):
        registry = query_int(params, "registry_id", 0)
        query = query.where(
            (ReplicationPolicy.src_registry_id == registry) | (ReplicationPolicy.dest_registry_id == registry)
        )
    column = {
        "name": ReplicationPolicy.name,
        "created_at": ReplicationPolicy.created_at,
        "updated_at": ReplicationPolicy.updated_at,
    }.get(params.get("order_column") or "created_at")
    if column is None:
        raise bad_request("order_column: expected name, created_at or updated_at")
    ordering = column.asc() if (params.get("order_type") or "desc").lower() == "asc" else column.desc()
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        policies = (await session.scalars(query.order_by(ordering).offset(offset).limit(limit))).all()
    return web.json_response({"policies": [_document(p) for p in policies], "total": total})


@routes.get(POLICIES + "/{policy_id}")
async def show_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions() as session:
        return web.json_response(_document(await _find(session, request)))


@routes.put(POLICIES + "/{policy_id}")
async def update_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    try:
        async with ctx.sessions.begin() as session:
            policy = await _find(session, request)
            await _apply(ctx, session, policy, body, creating=False)
            policy.updated_at = ctx.clock()
            await versions.bump(session, versions.REPLICATION_RULES)
    except IntegrityError:
        raise ApiError(409, "SWR.0409", "a replication policy with that name already exists") from None
    return web.json_response({})


@routes.delete(POLICIES + "/{policy_id}")
async def delete_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions.begin() as session:
        policy = await _find(session, request)
        await session.delete(policy)
        await versions.bump(session, versions.REPLICATION_RULES)
    return web.json_response({})


@routes.post(EXECUTIONS)
async def start(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request)
    policy_id = body.get("policy_id")
    if not isinstance(policy_id, int) or isinstance(policy_id, bool):
        raise bad_request("policy_id: expected an integer")
    async with ctx.sessions.begin() as session:
        policy = await session.get(ReplicationPolicy, policy_id)
        if policy is None:
            raise not_found(f"replication policy {policy_id} not found")
        execution = await start_execution(session, policy_id, "manual", ctx.clock())
        command = Command(
            id=f"{RUN_REPLICATION_POLICY}:execution:{execution.id}",
            kind=RUN_REPLICATION_POLICY,
            issued_at=ctx.clock(),
            params={"policy_id": policy_id, "execution_id": execution.id},
        )
        try:  # published inside the transaction: no execution row without its command
            await ctx.producer.publish(
                [OutgoingMessage(ctx.topics.commands, f"replication-policy-{policy_id}".encode(), command.encode())]
            )
        except BrokerUnavailable:
            raise ApiError(503, "SWR.0503", "the broker is unavailable; retry later", {"Retry-After": "5"}) from None
    return web.json_response({"id": execution.id}, status=201)


@routes.get(EXECUTIONS)
async def list_executions(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    query = select(ReplicationExecution)
    if params.get("policy_id"):
        query = query.where(ReplicationExecution.policy_id == query_int(params, "policy_id", 0))
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        executions = (
            await session.scalars(query.order_by(ReplicationExecution.id.desc()).offset(offset).limit(limit))
        ).all()
        summaries = await summarise(session, executions)
    body = [_execution_document(e, summaries[e.id]) for e in executions]
    return web.json_response({"executions": body, "total": total})


@routes.put(EXECUTIONS + "/{execution_id}")
async def stop(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    execution_id = bodies.path_int(request, "execution_id")
    async with ctx.sessions.begin() as session:
        execution = await session.get(ReplicationExecution, execution_id)
        if execution is None:
            raise not_found(f"replication execution {execution_id} not found")
        execution.stopped = True
        execution.updated_at = ctx.clock()
        await store.cancel_jobs(session, ctx.clock(), execution_id=execution_id)
    return web.json_response({})


@routes.get(EXECUTIONS + "/{execution_id}/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    execution_id = bodies.path_int(request, "execution_id")
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    query = select(ReplicationJob).where(ReplicationJob.execution_id == execution_id)
    async with ctx.sessions() as session:
        if await session.get(ReplicationExecution, execution_id) is None:
            raise not_found(f"replication execution {execution_id} not found")
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        jobs = (await session.scalars(query.order_by(ReplicationJob.id).offset(offset).limit(limit))).all()
    return web.json_response({"tasks": [_task_document(j) for j in jobs], "total": total})


@routes.get(EXECUTIONS + "/{execution_id}/tasks/{task_id}/subtasks")
async def list_subtasks(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    execution_id, task_id = bodies.path_int(request, "execution_id"), bodies.path_int(request, "task_id")
    async with ctx.sessions() as session:
        job = await session.get(ReplicationJob, task_id)
    if job is None or job.execution_id != execution_id:
        raise not_found(f"task {task_id} not found in execution {execution_id}")
    status = request.query.get("status")
    subtasks = [_subtask_document(job)] if not status or status == TASK_STATUS[job.status] else []
    return web.json_response({"sub_tasks": subtasks, "total": len(subtasks)})


async def _find(session: AsyncSession, request: web.Request) -> ReplicationPolicy:
    policy_id = bodies.path_int(request, "policy_id")
    policy = await session.get(ReplicationPolicy, policy_id)
    if policy is None:
        raise not_found(f"replication policy {policy_id} not found")
    return policy


async def _apply(
    ctx: ApiContext, session: Any, policy: ReplicationPolicy, body: dict[str, Any], *, creating: bool
) -> None:
    """Validate ``body`` onto ``policy``; on update, absent fields keep their values."""

    def given(field: str) -> bool:
        return creating or field in body

    ids = await registry_ids(session, list(ctx.settings.regions))
    if given("name"):
        policy.name = bodies.string(body, "name", max_length=255)
    if given("description"):
        policy.description = bodies.string(body, "description", required=False, max_length=1024)
    for field in ("src_registry", "dest_registry"):
        if given(field):
            setattr(policy, f"{field}_id", _registry(body.get(field), field, ids))
    if policy.src_registry_id == policy.dest_registry_id:
        raise bad_request("dest_registry: must differ from src_registry")
    if given("dest_namespace"):
        namespace = bodies.string(body, "dest_namespace", required=False, max_length=255)
        if namespace and ("/" in namespace or not grammar.is_repository_name(namespace)):
            raise bad_request(f"dest_namespace: {namespace!r} is not a valid namespace")
        policy.dest_namespace = namespace
    if given("filters"):
        try:
            parse_filters(body.get("filters"))
        except PolicyError as exc:
            raise bad_request(str(exc)) from None
        policy.filters = list(body.get("filters") or [])
    if given("repo_scope_mode"):
        policy.repo_scope_mode = bodies.string(body, "repo_scope_mode", required=False, max_length=32)
    if given("trigger"):
        policy.trigger_type, policy.cron = _trigger(body.get("trigger"))
    if given("override"):
        policy.override = bodies.boolean(body, "override", False)
    if given("enabled"):
        policy.enabled = bodies.boolean(body, "enabled", True)
    if given("replicate_deletion"):
        policy.replicate_deletion = bodies.boolean(body, "replicate_deletion", False)


def _registry(raw: object, field: str, ids: dict[str, int]) -> int:
    known = set(ids.values())
    value = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value not in known:
        listing = ", ".join(f"{i} ({r})" for r, i in sorted(ids.items()))
        raise bad_request(f"{field}.id: expected a registry id: {listing or 'no regions configured'}")
    return value


def _trigger(raw: object) -> tuple[str, str]:
    if raw is None:
        return "manual", ""
    if not isinstance(raw, dict) or raw.get("type", "manual") not in TRIGGER_TYPES:
        raise bad_request(f"trigger.type: expected one of {', '.join(TRIGGER_TYPES)}")
    kind = str(raw.get("type", "manual"))
    settings = raw.get("trigger_settings") or {}
    cron = str(settings.get("cron") or "") if isinstance(settings, dict) else ""
    if kind == "scheduled":
        try:
            CronTrigger.from_crontab(five_field_cron(cron))
        except ValueError as exc:
            raise bad_request(f"trigger.trigger_settings.cron: {exc}") from None
    return kind, cron


def _document(policy: ReplicationPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "src_registry": {"id": policy.src_registry_id},
        "dest_registry": {"id": policy.dest_registry_id},
        "dest_namespace": policy.dest_namespace,
        "filters": policy.filters,
        "repo_scope_mode": policy.repo_scope_mode,
        "trigger": {"type": policy.trigger_type, "trigger_settings": {"cron": policy.cron}},
        "override": policy.override,
        "enabled": policy.enabled,
        "replicate_deletion": policy.replicate_deletion,
        "created_at": iso_time(policy.created_at),
        "updated_at": iso_time(policy.updated_at),
    }


def _execution_document(execution: ReplicationExecution, summary: Any) -> dict[str, Any]:
    return {
        "id": execution.id,
        "policy_id": execution.policy_id,
        "status": summary.status,
        "status_text": execution.status_text,
        "total": summary.total,
        "failed": summary.failed,
        "succeed": summary.succeed,
        "in_progress": summary.in_progress,
        "stopped": summary.stopped,
        "trigger": execution.trigger,
        "created_at": iso_time(execution.created_at),
        "updated_at": iso_time(execution.updated_at),
    }


def _task_document(job: ReplicationJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "execution_id": job.execution_id,
        "resource_type": "image",
        "src_resource": f"{job.namespace}/{job.repository}:{job.tag}",
        "dst_resource": f"{job.remote_namespace}/{job.repository}:{job.tag}",
        "operation": job.operation,
        "job_id": str(job.id),
        "status": TASK_STATUS[job.status],
        "StatusRevision": job.attempts,
        "start_time": iso_time(job.started_at),
        "end_time": iso_time(job.finished_at),
        "detail": job.detail,
    }


def _subtask_document(job: ReplicationJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "job_id": str(job.id),
        "namespace": job.namespace,
        "repository": job.repository,
        "tag": job.tag,
        "digest": job.digest or "",
        "status": TASK_STATUS[job.status],
        "status_text": job.detail,
        "start_time": iso_time(job.started_at),
        "end_time": iso_time(job.finished_at),
    }
