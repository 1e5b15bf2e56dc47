"""SWR deployment triggers: ``/v2/manage/namespaces/{namespace}/repos/{repository}/triggers``.

Bodies follow the SDK's ``CreateTriggerRequestBody``/``UpdateTriggerRequestBody``; answers
its ``Trigger`` and ``TriggerHistories``. Extensions (ignored by the SDK, usable over plain
HTTP): ``verify_rollout`` and ``rollout_timeout`` on create; ``status``, ``attempts``,
``next_attempt_at``, ``rolled_back_to`` on history entries; ``POST .../histories/{id}/retry``.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.context import api_context
from workers.api.errors import ApiError, bad_request, not_found
from workers.db import versions
from workers.db.models import Delivery, DeploymentTrigger
from workers.events import grammar
from workers.triggers import store
from workers.triggers.conditions import ConditionError, parse_condition
from workers.triggers.kube import WORKLOAD_KINDS

BASE = "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers"
TRIGGER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HISTORY_LIMIT = 50
RESULTS = {store.SUCCEEDED: "success", store.FAILED: "failed", store.CANCELLED: "failed"}

routes = web.RouteTableDef()


def _repository(request: web.Request) -> tuple[str, str]:
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info["repository"])
    if not grammar.is_repository_name(f"{namespace}/{repository}"):
        raise bad_request(f"repository: {namespace}/{repository} is not a valid repository name")
    return namespace, repository


@routes.post(BASE)
async def create_trigger(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    trigger = _trigger_from_body(await bodies.json_object(request), namespace, repository)
    principal = principal_of(request)
    trigger.creator_name = principal.user_name if principal else "anonymous"
    trigger.created_at = ctx.clock()
    try:
        async with ctx.sessions.begin() as session:
            session.add(trigger)
            await versions.bump(session, versions.TRIGGER_RULES)
    except IntegrityError:
        raise ApiError(
            409, "SWR.0409", f"trigger {trigger.name!r} already exists in {namespace}/{repository}"
        ) from None
    return web.json_response({}, status=201)


@routes.get(BASE)
async def list_triggers(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    async with ctx.sessions() as session:
        triggers = (
            await session.scalars(
                select(DeploymentTrigger)
                .where(DeploymentTrigger.namespace == namespace, DeploymentTrigger.repository == repository)
                .order_by(DeploymentTrigger.created_at)
            )
        ).all()
        body = [_trigger_document(t, await _history(session, t)) for t in triggers]
    return web.json_response(body)


@routes.get(BASE + "/{trigger}")
async def show_trigger(request: web.Request) -> web.Response:
    ctx = api_context(request)
    async with ctx.sessions() as session:
        trigger = await _find(session, request)
        return web.json_response(_trigger_document(trigger, await _history(session, trigger)))


@routes.patch(BASE + "/{trigger}")
async def update_trigger(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request)
    if "enable" not in body:
        raise bad_request("enable: required")
    enabled = bodies.boolean(body, "enable", True)
    async with ctx.sessions.begin() as session:
        trigger = await _find(session, request)
        trigger.enabled = enabled
        await versions.bump(session, versions.TRIGGER_RULES)
        if not enabled:
            await store.cancel_pending(session, ctx.clock(), trigger_id=trigger.id, reason="trigger disabled")
    return web.json_response({})


@routes.delete(BASE + "/{trigger}")
async def delete_trigger(request: web.Request) -> web.Response:
    ctx = api_context(request)
    async with ctx.sessions.begin() as session:
        trigger = await _find(session, request)
        await store.cancel_pending(session, ctx.clock(), trigger_id=trigger.id, reason="trigger deleted")
        await session.delete(trigger)
        await versions.bump(session, versions.TRIGGER_RULES)
    return web.json_response({})


@routes.post(BASE + "/{trigger}/histories/{history_id}/retry")
async def retry_history(request: web.Request) -> web.Response:
    """Replay a finished execution (extension): same delivery, schedule restarted."""
    ctx = api_context(request)
    history_id = bodies.path_int(request, "history_id")
    async with ctx.sessions.begin() as session:
        trigger = await _find(session, request)
        delivery = await session.get(Delivery, history_id)
        if delivery is None or delivery.trigger_id != trigger.id:
            raise not_found(f"history {history_id} not found for trigger {trigger.name!r}")
        if not await store.replay(session, history_id, ctx.clock()):
            raise ApiError(409, "SWR.0409", f"history {history_id} is still in progress")
    return web.json_response({"id": history_id, "status": store.PENDING}, status=202)


async def _find(session: AsyncSession, request: web.Request) -> DeploymentTrigger:
    namespace, repository = _repository(request)
    name = request.match_info["trigger"]
    trigger = await session.scalar(
        select(DeploymentTrigger).where(
            DeploymentTrigger.namespace == namespace,
            DeploymentTrigger.repository == repository,
            DeploymentTrigger.name == name,
        )
    )
    if trigger is None:
        raise not_found(f"trigger {name!r} not found in {namespace}/{repository}")
    return trigger


def _trigger_from_body(body: dict[str, Any], namespace: str, repository: str) -> DeploymentTrigger:
    trigger_type = bodies.string(body, "trigger_type", default="all", required=False, max_length=16)
    condition = bodies.string(
        body, "condition", required=False, default=".*" if trigger_type == "all" else "", max_length=1024
    )
    try:
        parsed = parse_condition(trigger_type, condition)
    except ConditionError as exc:
        raise bad_request(str(exc)) from None
    cluster_id = bodies.string(body, "cluster_id", required=False, max_length=128)
    cluster_name = bodies.string(body, "cluster_name", required=False, max_length=128)
    if not cluster_id and not cluster_name:
        raise bad_request("cluster_id: required (or cluster_name)")
    return DeploymentTrigger(
        namespace=namespace,
        repository=repository,
        name=bodies.string(body, "name", max_length=64, pattern=TRIGGER_NAME),
        action=bodies.string(body, "action", required=False, default="update", choices=("update",)),
        app_type=bodies.string(body, "app_type", choices=WORKLOAD_KINDS),
        application=bodies.string(body, "application", max_length=253, pattern=bodies.DNS_SUBDOMAIN),
        cluster_id=cluster_id,
        cluster_name=cluster_name,
        cluster_ns=bodies.string(body, "cluster_ns", max_length=63, pattern=bodies.DNS_LABEL),
        condition=parsed.condition,
        container=bodies.string(body, "container", required=False, max_length=63, pattern=bodies.DNS_LABEL),
        enabled=bodies.boolean(body, "enable", True),
        trigger_mode=bodies.string(body, "trigger_mode", required=False, default="cce", choices=("cce", "cci")),
        trigger_type=parsed.trigger_type,
        verify_rollout=None if body.get("verify_rollout") is None else bodies.boolean(body, "verify_rollout", False),
        rollout_timeout_s=bodies.number(body, "rollout_timeout", low=1, high=3600),
    )


async def _history(session: AsyncSession, trigger: DeploymentTrigger) -> list[Delivery]:
    rows = await session.scalars(
        select(Delivery)
        .where(Delivery.trigger_id == trigger.id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(HISTORY_LIMIT)
    )
    return list(rows.all())


def _trigger_fields(trigger: DeploymentTrigger) -> dict[str, Any]:
    return {
        "action": trigger.action,
        "app_type": trigger.app_type,
        "application": trigger.application,
        "cluster_id": trigger.cluster_id,
        "cluster_name": trigger.cluster_name,
        "cluster_ns": trigger.cluster_ns,
        "condition": trigger.condition,
        "container": trigger.container,
        "creator_name": trigger.creator_name,
    }


def _trigger_document(trigger: DeploymentTrigger, history: list[Delivery]) -> dict[str, Any]:
    return {
        **_trigger_fields(trigger),
        "created_at": _time(trigger.created_at),
        "enable": "true" if trigger.enabled else "false",
        "name": trigger.name,
        "trigger_history": [_history_document(trigger, d) for d in history],
        "trigger_mode": trigger.trigger_mode,
        "trigger_type": trigger.trigger_type,
        "verify_rollout": trigger.verify_rollout,
        "rollout_timeout": trigger.rollout_timeout_s,
    }


def _history_document(trigger: DeploymentTrigger, delivery: Delivery) -> dict[str, Any]:
    return {
        **_trigger_fields(trigger),
        "created_at": _time(delivery.created_at),
        "detail": delivery.detail,
        "result": RESULTS.get(delivery.status, delivery.status),
        "tag": delivery.tag or "",
        "id": delivery.id,
        "digest": delivery.digest,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.status == store.PENDING else None,
        "rolled_back_to": delivery.rolled_back_to,
        "finished_at": _time(delivery.finished_at) or None,
    }


def _time(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""
