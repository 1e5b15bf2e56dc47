"""SWR basic-edition retention: ``/v2/manage/namespaces/{namespace}/repos/{repository}/retentions``.

Create, list, show, update (PATCH), delete, with the SDK's ``CreateRetentionRequestBody``
(``algorithm`` "or", ``rules[]`` of ``date_rule`` {days} / ``tag_rule`` {num} with
``tag_selectors`` ``label``/``regexp`` naming tags never deleted) and ``Retention``; histories
(``RetentionLog``) with paging. Saving an enabled policy runs it (a ``run-retention`` command);
it also runs on ``retention.cron``. Extensions: ``enabled`` in bodies (a disabled policy runs
only on request), ``POST .../retentions/{id}/runs`` (``{"dry_run": true}`` stores a plan
explaining every digest without deleting; ``{"apply_run": ID}`` executes exactly that plan and
reports drift), ``GET .../retentions/{id}/runs[/{run}]``, and ``POST .../retentions/restore``
(``{"reference": tag or digest}``).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.context import ApiContext, api_context
from workers.api.errors import ApiError, bad_request, not_found
from workers.api.instance import iso_time
from workers.api.paging import content_range, list_params
from workers.db.models import RetentionLog, RetentionPolicy, RetentionRun
from workers.events import grammar
from workers.maintenance.commands import RUN_RETENTION, Command
from workers.replication.clients import RegionClients
from workers.replication.errors import RegistryError
from workers.replication.store import CheckpointStore
from workers.retention.restore import restore
from workers.retention.rules import RuleError, basic_rules_to_json, parse_basic_rules
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage

BASE = "/v2/manage/namespaces/{namespace}/repos/{repository}/retentions"
HISTORY_PARAMS = frozenset({"limit", "offset"})

routes = web.RouteTableDef()


def _repository(request: web.Request) -> tuple[str, str]:
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info["repository"])
    if not grammar.is_repository_name(f"{namespace}/{repository}"):
        raise bad_request(f"repository: {namespace}/{repository} is not a valid repository name")
    return namespace, repository


def _rules(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return basic_rules_to_json(parse_basic_rules(body.get("algorithm", "or"), body.get("rules")))
    except RuleError as exc:
        raise bad_request(str(exc)) from None


async def request_run(
    ctx: ApiContext, policy_id: int, trigger: str, *, dry_run: bool = False, apply_run: int | None = None
) -> str:
    """Publish a ``run-retention`` command; answers its id (the run's key)."""
    params: dict[str, int | str] = {"policy_id": policy_id, "trigger": trigger, "dry_run": int(dry_run)}
    if apply_run is not None:
        params["apply_run"] = apply_run
    command = Command(
        id=f"retention:{policy_id}:{trigger}:{uuid.uuid4()}", kind=RUN_RETENTION, issued_at=ctx.clock(), params=params
    )
    try:
        await ctx.producer.publish(
            [OutgoingMessage(ctx.topics.commands, f"retention-{policy_id}".encode(), command.encode())]
        )
    except BrokerUnavailable:
        raise ApiError(503, "SWR.0503", "the broker is unavailable; retry later", {"Retry-After": "5"}) from None
    return command.id


@routes.post(BASE)
async def create_retention(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    body = await bodies.json_object(request)
    rules = _rules(body)
    principal = principal_of(request)
    now = ctx.clock()
    policy = RetentionPolicy(
        edition="basic",
        namespace=namespace,
        repository=repository,
        name="",
        algorithm="or",
        rules=rules["rules"],
        enabled=bodies.boolean(body, "enabled", True),
        cron=ctx.settings.retention.cron,
        creator=principal.user_name if principal else "anonymous",
        created_at=now,
        updated_at=now,
    )
    async with ctx.sessions.begin() as session:
        session.add(policy)
    await request_run(ctx, policy.id, "saved")
    return web.json_response({"id": policy.id}, status=201)


@routes.get(BASE)
async def list_retentions(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    async with ctx.sessions() as session:
        policies = (
            await session.scalars(
                select(RetentionPolicy)
                .where(
                    RetentionPolicy.edition == "basic",
                    RetentionPolicy.namespace == namespace,
                    RetentionPolicy.repository == repository,
                )
                .order_by(RetentionPolicy.id)
            )
        ).all()
    return web.json_response([_document(p) for p in policies])


@routes.get(BASE + "/histories")
async def list_histories(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    params = list_params(request.query, HISTORY_PARAMS)
    offset, limit = _int(params, "offset", 0, 10**9), _int(params, "limit", 100, 1000)
    query = select(RetentionLog).where(RetentionLog.namespace == namespace, RetentionLog.repo == repository)
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        logs = (await session.scalars(query.order_by(RetentionLog.id.desc()).offset(offset).limit(limit))).all()
    body = {"retention_log": [_log_document(entry) for entry in logs], "total": total}
    return web.json_response(body, headers={"Content-Range": content_range(offset, len(logs), total)})


@routes.post(BASE + "/restore")
async def restore_deleted(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    reference = bodies.string(await bodies.json_object(request), "reference", max_length=160)
    clients = RegionClients(ctx.settings, ctx.sessions, CheckpointStore(ctx.sessions, ctx.clock))
    try:
        entry = await restore(ctx.sessions, clients, ctx.clock, namespace, repository, reference)
    except LookupError as exc:
        raise not_found(str(exc)) from None
    except RegistryError as exc:
        raise ApiError(409, "SWR.0409", f"the registry refused the restore: {exc}") from None
    finally:
        await clients.close()
    return web.json_response({"digest": entry.digest, "tags": entry.tags})


@routes.get(BASE + "/{retention_id}")
async def show_retention(request: web.Request) -> web.Response:
    ctx = api_context(request)
    async with ctx.sessions() as session:
        return web.json_response(_document(await _find(session, request)))


@routes.patch(BASE + "/{retention_id}")
async def update_retention(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request)
    rules = _rules(body)
    async with ctx.sessions.begin() as session:
        policy = await _find(session, request)
        policy.rules, policy.updated_at = rules["rules"], ctx.clock()
        policy.enabled = bodies.boolean(body, "enabled", policy.enabled)
    await request_run(ctx, policy.id, "saved")
    return web.json_response({})


@routes.delete(BASE + "/{retention_id}")
async def delete_retention(request: web.Request) -> web.Response:
    ctx = api_context(request)
    async with ctx.sessions.begin() as session:
        await session.delete(await _find(session, request))
    return web.json_response({})


@routes.post(BASE + "/{retention_id}/runs")
async def run_now(request: web.Request) -> web.Response:
    ctx = api_context(request)
    body = await bodies.json_object(request) if request.body_exists else {}
    async with ctx.sessions() as session:
        policy = await _find(session, request)
    apply_run = body.get("apply_run")
    if apply_run is not None and (not isinstance(apply_run, int) or isinstance(apply_run, bool)):
        raise bad_request("apply_run: expected the id of a (dry) run whose plan to execute")
    key = await request_run(
        ctx, policy.id, "manual", dry_run=bodies.boolean(body, "dry_run", False), apply_run=apply_run
    )
    return web.json_response({"key": key}, status=202)


@routes.get(BASE + "/{retention_id}/runs")
async def list_runs(request: web.Request) -> web.Response:
    ctx = api_context(request)
    async with ctx.sessions() as session:
        policy = await _find(session, request)
        runs = (
            await session.scalars(
                select(RetentionRun)
                .where(RetentionRun.policy_id == policy.id)
                .order_by(RetentionRun.id.desc())
                .limit(50)
            )
        ).all()
    return web.json_response([_run_document(r, with_plan=False) for r in runs])


@routes.get(BASE + "/{retention_id}/runs/{run_id}")
async def show_run(request: web.Request) -> web.Response:
    ctx = api_context(request)
    run_id = bodies.path_int(request, "run_id")
    async with ctx.sessions() as session:
        policy = await _find(session, request)
        run = await session.get(RetentionRun, run_id)
    if run is None or run.policy_id != policy.id:
        raise not_found(f"run {run_id} not found for retention {policy.id}")
    return web.json_response(_run_document(run, with_plan=True))


async def _find(session: AsyncSession, request: web.Request) -> RetentionPolicy:
    namespace, repository = _repository(request)
    retention_id = bodies.path_int(request, "retention_id")
    policy = await session.get(RetentionPolicy, retention_id)
    if policy is None or (policy.namespace, policy.repository, policy.edition) != (namespace, repository, "basic"):
        raise not_found(f"retention {retention_id} not found in {namespace}/{repository}")
    return policy


def _document(policy: RetentionPolicy) -> dict[str, Any]:
    return {
        "algorithm": policy.algorithm,
        "id": policy.id,
        "rules": policy.rules,
        "scope": f"{policy.namespace}/{policy.repository}",
    }


def _log_document(entry: RetentionLog) -> dict[str, Any]:
    return {
        "created_at": iso_time(entry.created_at),
        "id": entry.id,
        "namespace": entry.namespace,
        "repo": entry.repo,
        "retention_id": entry.retention_id,
        "rule_type": entry.rule_type,
        "tag": entry.tag,
        "digest": entry.digest,
    }


def _run_document(run: RetentionRun, *, with_plan: bool) -> dict[str, Any]:
    document = {
        "id": run.id,
        "trigger": run.trigger,
        "dry_run": run.dry_run,
        "status": run.status,
        "counts": run.counts,
        "detail": run.detail,
        "created_at": iso_time(run.created_at),
        "finished_at": iso_time(run.finished_at) or None,
    }
    if with_plan:
        document["plan"] = run.plan
    return document


def _int(params: dict[str, str], name: str, default: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > high:
        raise bad_request(f"{name}: expected an integer between 0 and {high}")
    return int(raw)
