"""``POST /v2/manage/namespaces/{namespace}/repos/{repository}/retentions/backfill`` (an extension).

Reads the repository from the local region's registry and records in the inventory what it
lacks (:mod:`workers.retention.backfill`), so retention sees images pushed while the service
was not listening. Runs within the request (one repository); answers the report
``{repositories, tags, recorded, known, gone, errors}``; 502 when the registry cannot be read.
"""

from __future__ import annotations

from aiohttp import web

from workers.api.context import api_context
from workers.api.errors import ApiError, bad_request
from workers.events import grammar
from workers.replication.clients import RegionClients
from workers.replication.store import CheckpointStore
from workers.retention.backfill import backfill

routes = web.RouteTableDef()


@routes.post("/v2/manage/namespaces/{namespace}/repos/{repository}/retentions/backfill")
async def backfill_repository(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info["repository"])
    if not grammar.is_repository_name(f"{namespace}/{repository}"):
        raise bad_request(f"repository: {namespace}/{repository} is not a valid repository name")
    if ctx.settings.local_registry() is None:
        raise ApiError(409, "SWR.0409", f"region {ctx.settings.region!r} has no registry under regions:")
    clients = RegionClients(ctx.settings, ctx.sessions, CheckpointStore(ctx.sessions, ctx.clock))
    try:
        client = clients.client(ctx.settings.region)
        report = await backfill(ctx.sessions, client, ctx.settings.region, ctx.clock, namespace, repository)
    finally:
        await clients.close()
    if report.errors:
        raise ApiError(502, "SWR.0502", f"the registry could not be read: {'; '.join(report.errors)}")
    return web.json_response(report.as_json())
