"""What the SWR enterprise-edition routes share: the instance prefix and its checks, paging, times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aiohttp import web

from workers.api.context import ApiContext, api_context
from workers.api.errors import bad_request, not_found

INSTANCE = "/v2/{project_id}/instances/{instance_id}"


def instance_context(request: web.Request) -> ApiContext:
    """The context, after checking the path names this service's project and instance (else 404)."""
    ctx = api_context(request)
    project, instance = request.match_info["project_id"], request.match_info["instance_id"]
    if project != ctx.settings.project_id or instance != ctx.settings.instance_id:
        raise not_found(f"instance {instance!r} of project {project!r} not found", code="SWR.0404")
    return ctx


def query_int(params: Mapping[str, str], name: str, default: int, *, high: int = 10**9) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if not str(raw).isdigit() or int(str(raw)) > high:
        raise bad_request(f"{name}: expected an integer between 0 and {high}")
    return int(str(raw))


def iso_time(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""
