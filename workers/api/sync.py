"""SWR basic-edition image sync: automatic rules, manual sync, jobs, regions.

``/v2/manage/namespaces/{namespace}/repos/{repository}/sync_repo`` (POST/GET/DELETE),
``.../sync_images`` (POST), ``.../sync_job`` (GET, ``filter=limit::N|offset::M|status::S``,
``Content-Range``) and ``/v2/manage/regions``, with the SDK's ``SyncRepo``/``SyncJob`` shapes.
Extension: ``GET .../sync_job/{id}`` with progress counters.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from workers.api import bodies
from workers.api.authn import principal_of
from workers.api.context import ApiContext, api_context
from workers.api.errors import ApiError, bad_request, not_found
from workers.api.paging import content_range, list_params, page_of
from workers.db import versions
from workers.db.models import ReplicationJob, SyncRule
from workers.events import grammar
from workers.maintenance.commands import RECONCILE_REPLICATION, Command
from workers.replication import store
from workers.runtime.producer import BrokerUnavailable, OutgoingMessage

BASE = "/v2/manage/namespaces/{namespace}/repos/{repository}"
NAMESPACE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
JOB_PARAMS = frozenset({"limit", "offset", "status", "order_column", "order_type"})
JOB_ORDER = {"created_at": ReplicationJob.created_at, "updated_at": ReplicationJob.updated_at}
MAX_MANUAL_TAGS = 100

routes = web.RouteTableDef()


def _repository(request: web.Request) -> tuple[str, str]:
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info["repository"])
    if not grammar.is_repository_name(f"{namespace}/{repository}"):
        raise bad_request(f"repository: {namespace}/{repository} is not a valid repository name")
    return namespace, repository


def _remote(ctx: ApiContext, body: dict[str, Any]) -> tuple[str, str]:
    region = bodies.string(body, "remoteRegionId", max_length=64)
    if region not in ctx.settings.regions:
        known = ", ".join(sorted(ctx.settings.regions)) or "none"
        raise bad_request(f"remoteRegionId: region {region!r} is not configured (configured: {known})")
    namespace = bodies.string(body, "remoteNamespace", max_length=255, pattern=NAMESPACE)
    return region, namespace


@routes.post(BASE + "/sync_repo")
async def create_sync_rule(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    body = await bodies.json_object(request)
    region, remote_namespace = _remote(ctx, body)
    if region == ctx.settings.region and remote_namespace == namespace:
        raise bad_request("remoteNamespace: syncing a repository onto itself; choose another region or namespace")
    principal = principal_of(request)
    now = ctx.clock()
    rule = SyncRule(
        namespace=namespace,
        repository=repository,
        remote_region=region,
        remote_namespace=remote_namespace,
        sync_auto=bodies.boolean(body, "syncAuto", True),
        override=bodies.boolean(body, "override", False),
        creator=principal.user_name if principal else "anonymous",
        created_at=now,
        updated_at=now,
    )
    try:
        async with ctx.sessions.begin() as session:
            session.add(rule)
            await versions.bump(session, versions.REPLICATION_RULES)
    except IntegrityError:
        raise ApiError(409, "SWR.0409", f"a sync rule to {region}/{remote_namespace} already exists") from None
    return web.json_response({}, status=201)


@routes.get(BASE + "/sync_repo")
async def list_sync_rules(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    async with ctx.sessions() as session:
        rules = (
            await session.scalars(
                select(SyncRule)
                .where(SyncRule.namespace == namespace, SyncRule.repository == repository)
                .order_by(SyncRule.id)
            )
        ).all()
    return web.json_response([_rule_document(ctx, r) for r in rules])


@routes.delete(BASE + "/sync_repo")
async def delete_sync_rule(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    body = await bodies.json_object(request)
    region = bodies.string(body, "remoteRegionId", max_length=64)
    remote_namespace = bodies.string(body, "remoteNamespace", max_length=255)
    async with ctx.sessions.begin() as session:
        result = await session.execute(
            delete(SyncRule).where(
                SyncRule.namespace == namespace,
                SyncRule.repository == repository,
                SyncRule.remote_region == region,
                SyncRule.remote_namespace == remote_namespace,
            )
        )
        await versions.bump(session, versions.REPLICATION_RULES)
    if not getattr(result, "rowcount", 0):
        raise not_found(f"no sync rule of {namespace}/{repository} to {region}/{remote_namespace}")
    return web.json_response({})


@routes.post(BASE + "/sync_images")
async def sync_images(request: web.Request) -> web.Response:
    """Queue one manual job per tag; answers the job ids."""
    ctx = api_context(request)
    namespace, repository = _repository(request)
    body = await bodies.json_object(request)
    region, remote_namespace = _remote(ctx, body)
    tags = body.get("imageTag")
    if not isinstance(tags, list) or not tags or len(tags) > MAX_MANUAL_TAGS:
        raise bad_request(f"imageTag: expected a list of 1 to {MAX_MANUAL_TAGS} tags")
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not grammar.is_tag(tag):
            raise bad_request(f"imageTag[{index}]: {tag!r} is not a valid tag")
    principal = principal_of(request)
    override = bodies.boolean(body, "override", False)
    requests = [
        store.JobRequest(
            key=f"manual:{uuid.uuid4()}",
            trigger="manual",
            source_region=ctx.settings.region,
            namespace=namespace,
            repository=repository,
            tag=tag,
            remote_region=region,
            remote_namespace=remote_namespace,
            override=override,
            operator_id=principal.user_id if principal else "",
            operator_name=principal.user_name if principal else "",
        )
        for tag in dict.fromkeys(tags)
    ]
    async with ctx.sessions.begin() as session:
        ids = await store.queue_jobs(session, requests, ctx.clock())
    return web.json_response([str(i) for i in ids])


@routes.get(BASE + "/sync_job")
async def list_sync_jobs(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    params = list_params(request.query, JOB_PARAMS)
    page = page_of(params, "created_at", frozenset(JOB_ORDER))
    query = select(ReplicationJob).where(ReplicationJob.namespace == namespace, ReplicationJob.repository == repository)
    status = params.get("status")
    if status:
        if status not in store.STATUSES:
            raise bad_request(f"status: expected one of {', '.join(store.STATUSES)}")
        query = query.where(ReplicationJob.status == status)
    column = JOB_ORDER[page.order_column]
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
        jobs = (
            await session.scalars(
                query.order_by(column.desc() if page.descending else column.asc(), ReplicationJob.id.desc())
                .offset(page.offset)
                .limit(page.limit)
            )
        ).all()
    body = [_job_document(ctx, j) for j in jobs]
    return web.json_response(body, headers={"Content-Range": content_range(page.offset, len(body), total)})


@routes.get(BASE + "/sync_job/{job_id}")
async def show_sync_job(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace, repository = _repository(request)
    job_id = bodies.path_int(request, "job_id")
    async with ctx.sessions() as session:
        job = await session.get(ReplicationJob, job_id)
    if job is None or (job.namespace, job.repository) != (namespace, repository):
        raise not_found(f"sync job {job_id} not found in {namespace}/{repository}")
    return web.json_response(_job_document(ctx, job))


@routes.post(BASE + "/sync_repo/reconcile")
async def reconcile_repository(request: web.Request) -> web.Response:
    """Compare source and destination now and queue repairs (extension); answers the command id."""
    ctx = api_context(request)
    namespace, repository = _repository(request)
    command = Command(
        id=f"{RECONCILE_REPLICATION}:request:{uuid.uuid4()}",
        kind=RECONCILE_REPLICATION,
        issued_at=ctx.clock(),
        params={"namespace": namespace, "repository": repository},
    )
    try:
        await ctx.producer.publish(
            [OutgoingMessage(ctx.topics.commands, f"{namespace}/{repository}".encode(), command.encode())]
        )
    except BrokerUnavailable:
        raise ApiError(503, "SWR.0503", "the broker is unavailable; retry later", {"Retry-After": "5"}) from None
    return web.json_response({"command_id": command.id}, status=202)


@routes.get("/v2/manage/regions")
async def list_regions(request: web.Request) -> web.Response:
    ctx = api_context(request)
    return web.json_response([{"regionID": region} for region in sorted(ctx.settings.regions)])


def _rule_document(ctx: ApiContext, rule: SyncRule) -> dict[str, Any]:
    return {
        "createdAt": _time(rule.created_at),
        "domainID": ctx.settings.project_id,
        "domainName": ctx.settings.project_id,
        "id": rule.id,
        "namespace": rule.namespace,
        "override": rule.override,
        "remoteNamespace": rule.remote_namespace,
        "remoteRegionId": rule.remote_region,
        "repoName": rule.repository,
        "syncAuto": rule.sync_auto,
        "updatedAt": _time(rule.updated_at),
    }


def _job_document(ctx: ApiContext, job: ReplicationJob) -> dict[str, Any]:
    return {
        "createdAt": _time(job.created_at),
        "domainID": ctx.settings.project_id,
        "domainName": ctx.settings.project_id,
        "id": job.id,
        "namespace": job.namespace,
        "override": job.override,
        "remoteNamespace": job.remote_namespace,
        "remoteRegionId": job.remote_region,
        "repoName": job.repository,
        "status": job.status,
        "syncOperatorId": job.operator_id,
        "syncOperatorName": job.operator_name,
        "tag": job.tag,
        "updatedAt": _time(job.updated_at),
        # extensions
        "trigger": job.trigger,
        "digest": job.digest,
        "detail": job.detail,
        "attempts": job.attempts,
        "bytesTotal": job.bytes_total,
        "bytesDone": job.bytes_done,
        "blobsCopied": job.blobs_copied,
        "blobsSkipped": job.blobs_skipped,
        "blobsMounted": job.blobs_mounted,
        "startedAt": _time(job.started_at) or None,
        "finishedAt": _time(job.finished_at) or None,
    }


def _time(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""
