"""SWR repository and tag listings, served from the inventory.

``GET /v2/manage/repos`` and ``GET /v2/manage/namespaces/{namespace}/repos/{repository}/tags``
(response shapes: ``ShowReposResp`` and ``ShowReposTagResp`` of the official SDK).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from workers.api.authz import visible_repositories
from workers.api.context import ApiContext, api_context
from workers.api.errors import not_found
from workers.api.paging import content_range, list_params, page_of
from workers.events import grammar
from workers.inventory import queries

REPO_PARAMS = frozenset({"namespace", "name", "category", "limit", "offset", "order_column", "order_type"})
TAG_PARAMS = frozenset({"limit", "offset", "order_column", "order_type", "tag"})
MANIFEST_SCHEMA_1 = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}

routes = web.RouteTableDef()


@routes.get("/v2/manage/repos")
async def list_repos(request: web.Request) -> web.Response:
    ctx = api_context(request)
    params = list_params(request.query, REPO_PARAMS)
    page = page_of(params, "name", frozenset(queries.REPO_ORDER))
    async with ctx.sessions() as session:
        total, repos = await queries.list_repositories(
            session,
            ctx.settings.region,
            page,
            params.get("namespace"),
            params.get("name"),
            visible_repositories(request),  # a grant-only caller sees what the grants cover
        )
    category = params.get("category")
    if category and category not in {"other", "linux", "windows"}:
        repos = []
    body = [_repo_document(ctx, repo, total) for repo in repos]
    return web.json_response(body, headers={"Content-Range": content_range(page.offset, len(body), total)})


@routes.get("/v2/manage/namespaces/{namespace}/repos/{repository}/tags")
async def list_repository_tags(request: web.Request) -> web.Response:
    ctx = api_context(request)
    namespace = request.match_info["namespace"]
    repository = grammar.api_repository(request.match_info["repository"])
    params = list_params(request.query, TAG_PARAMS)
    page = page_of(params, "updated", frozenset(queries.TAG_ORDER))
    async with ctx.sessions() as session:
        if not await queries.repository_exists(session, ctx.settings.region, namespace, repository):
            raise not_found(f"repository {namespace}/{repository} not found", code="SWR.0404")
        total, tags = await queries.list_tags(
            session, ctx.settings.region, namespace, repository, page, params.get("tag")
        )
    body = [_tag_document(ctx, namespace, repository, tag) for tag in tags]
    return web.json_response(body, headers={"Content-Range": content_range(page.offset, len(body), total)})


def _repo_document(ctx: ApiContext, repo: queries.RepositorySummary, total: int) -> dict[str, Any]:
    path = f"{ctx.registry_host}/{repo.name}" if ctx.registry_host else repo.name
    return {
        "name": repo.repository,
        "category": "other",
        "description": "",
        "size": repo.size,
        "is_public": False,
        "num_images": repo.num_images,
        "num_download": 0,
        "created_at": _time(repo.created_at),
        "updated_at": _time(repo.updated_at),
        "logo": "",
        "url": "",
        "path": path,
        "internal_path": path,
        "domain_name": ctx.settings.project_id,
        "namespace": repo.namespace,
        "tags": repo.tags,
        "status": False,
        "total_range": total,
    }


def _tag_document(ctx: ApiContext, namespace: str, repository: str, tag: queries.TagRow) -> dict[str, Any]:
    name = f"{namespace}/{repository}"
    path = f"{ctx.registry_host}/{name}:{tag.tag}" if ctx.registry_host else f"{name}:{tag.tag}"
    return {
        "id": tag.id,
        "repo_id": 0,
        "Tag": tag.tag,
        "image_id": tag.digest or "",
        "manifest": "",
        "digest": tag.digest or "",
        "schema": 1 if tag.media_type in MANIFEST_SCHEMA_1 else 2,
        "path": path,
        "internal_path": path,
        "size": tag.size or 0,
        "is_trusted": False,
        "created": _time(tag.pushed_at),
        "updated": _time(tag.updated_at),
        "deleted": "",
        "domain_id": ctx.settings.project_id,
        "scanned": False,
        "tag_type": 0,
    }


def _time(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""
