"""SWR enterprise retention executions: run now, list runs, their tasks and sub-tasks.

``POST .../retention/policies/{policy_id}/executions`` (``{"dry_run": bool}``, body optional)
answers the execution's ``id`` at once: the run row is created ``pending`` here and claimed by
the maintenance worker that receives the ``run-retention`` command. ``GET .../executions``
lists ``RetentionExecution``s (newest first); ``.../executions/{id}/tasks`` one ``Task`` per
repository and ``.../tasks/{task_id}/subtasks`` one ``Subtask`` per tag, both derived from the
run's stored plan (:mod:`workers.retention.executions`), with ``offset``, ``limit`` and
``status`` (``InProgress``, ``Succeed``, ``Failed``, ``Stopped``). Extensions on an execution:
``status_text`` (the run's detail: deletions, drift, or why a blast-radius cap stopped it) and
``counts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from workers.api import bodies
from workers.api.errors import not_found
from workers.api.instance import instance_context, iso_time, query_int
from workers.api.retention_policies import POLICIES, find_policy
from workers.api.retentions import request_run
from workers.db.models import RetentionLog, RetentionRun
from workers.retention.executions import TRIGGERS, TaskView, execution_status, execution_tasks
from workers.retention.runner import PENDING

EXECUTIONS = POLICIES + "/{policy_id}/executions"
TASKS = EXECUTIONS + "/{execution_id}/tasks"

routes = web.RouteTableDef()
Item = TypeVar("Item")


@routes.post(EXECUTIONS)
async def execute_policy(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    body = await bodies.json_object(request) if request.body_exists else {}
    dry_run = bodies.boolean(body, "dry_run", False)
    async with ctx.sessions() as session:
        policy = await find_policy(session, request)
    key = await request_run(ctx, policy.id, "manual", dry_run=dry_run)
    run = RetentionRun(
        key=key,
        policy_id=policy.id,
        trigger="manual",
        dry_run=dry_run,
        status=PENDING,
        plan=[],
        counts={},
        detail="",
        created_at=ctx.clock(),
    )
    try:
        async with ctx.sessions.begin() as session:
            session.add(run)
        run_id = run.id
    except IntegrityError:  # the worker was quicker and created the row itself
        async with ctx.sessions() as session:
            run_id = (await session.scalars(select(RetentionRun.id).where(RetentionRun.key == key))).one()
    return web.json_response({"id": run_id}, status=201)


@routes.get(EXECUTIONS)
async def list_executions(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    params = request.query
    offset, limit = query_int(params, "offset", 0), query_int(params, "limit", 100, high=1000)
    async with ctx.sessions() as session:
        policy = await find_policy(session, request)
        query = select(RetentionRun).where(RetentionRun.policy_id == policy.id)
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        runs = (await session.scalars(query.order_by(RetentionRun.id.desc()).offset(offset).limit(limit))).all()
    return web.json_response({"total": total, "executions": [_execution_document(r) for r in runs]})


@routes.get(TASKS)
async def list_tasks(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    async with ctx.sessions() as session:
        run, tasks = await _tasks(session, request)
    chosen = _page(request, [t for t in tasks if _wanted(request, t.status)])
    return web.json_response({"tasks": [_task_document(run, t) for t in chosen[1]], "total": chosen[0]})


@routes.get(TASKS + "/{task_id}/subtasks")
async def list_subtasks(request: web.Request) -> web.Response:
    ctx = instance_context(request)
    task_id = bodies.path_int(request, "task_id")
    async with ctx.sessions() as session:
        run, tasks = await _tasks(session, request)
    task = next((t for t in tasks if t.id == task_id), None)
    if task is None:
        raise not_found(f"task {task_id} not found in execution {run.id}")
    namespace = request.match_info["namespace_name"]
    total, chosen = _page(request, [s for s in task.subtasks if _wanted(request, s.status)])
    subtasks = [
        {
            "id": s.id,
            "job_id": task.id,
            "namespace": namespace,
            "repository": s.repository,
            "tag": s.tag,
            "digest": s.digest,
            "action": s.action,
            "status": s.status,
            "status_text": s.status_text,
            "op_time": iso_time(run.finished_at),
        }
        for s in chosen
    ]
    return web.json_response({"sub_tasks": subtasks, "total": total})


async def _tasks(session: AsyncSession, request: web.Request) -> tuple[RetentionRun, list[TaskView]]:
    policy = await find_policy(session, request)
    execution_id = bodies.path_int(request, "execution_id")
    run = await session.get(RetentionRun, execution_id)
    if run is None or run.policy_id != policy.id:
        raise not_found(f"execution {execution_id} not found for retention policy {policy.id}")
    logged = await session.execute(
        select(RetentionLog.repo, RetentionLog.digest).where(RetentionLog.run_id == run.id).distinct()
    )
    deleted = [(repo, digest) for repo, digest in logged.all()]
    return run, execution_tasks(run.status, run.dry_run, run.plan, deleted)


def _wanted(request: web.Request, status: str) -> bool:
    wanted = request.query.get("status")
    return not wanted or wanted == status


def _page(request: web.Request, items: Sequence[Item]) -> tuple[int, Sequence[Item]]:
    offset = query_int(request.query, "offset", 0)
    limit = query_int(request.query, "limit", 100, high=1000)
    return len(items), items[offset : offset + limit]


def _execution_document(run: RetentionRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "policy_id": run.policy_id,
        "dry_run": run.dry_run,
        "status": execution_status(run.status),
        "trigger": TRIGGERS.get(run.trigger, run.trigger.upper()),
        "start_time": iso_time(run.created_at),
        "end_time": iso_time(run.finished_at),
        "status_text": run.detail,
        "counts": run.counts,
    }


def _task_document(run: RetentionRun, task: TaskView) -> dict[str, Any]:
    return {
        "id": task.id,
        "execution_id": run.id,
        "repository": task.repository,
        "job_id": f"{run.id}-{task.id}",
        "status": task.status,
        "status_code": task.status_code,
        "status_revision": 0,
        "start_time": iso_time(run.created_at),
        "end_time": iso_time(run.finished_at),
        "total": task.total,
        "retained": task.retained,
    }
