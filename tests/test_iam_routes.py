"""ROUTE_ACTIONS: every route of the SWR API has an action, a resource and its dependencies."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from aiohttp import web

import workers.api
from workers.iam.actions import (
    ACTIONS,
    DEPENDENT_ACTIONS,
    ROUTE_ACTIONS,
    UnknownRoute,
    action_info,
    route_action,
)
from workers.iam.urn import ANY, Scope, parse_urn

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
SWR_API = SHARED / "swr-api.md"
SEEDS = SHARED / "seeds"
SCOPE = Scope("region-a", "acc1")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
HEADING = re.compile(r"^## (GET|POST|PUT|PATCH|DELETE) (/\S+)$", re.MULTILINE)
# Seed 001, table 2: "METHOD /path" then, after a blank line, the action.
# Routes that check their action without the dependent actions the catalogue lists for it.
WITHOUT_DEPENDENCIES = {("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_repo/reconcile")}
SEED_ROW = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (/v2/\S+)\n\n(swr:[A-Za-z]*:[A-Za-z]+)$", re.MULTILINE)


def _documented_routes() -> list[tuple[str, str]]:
    if not SWR_API.exists():
        pytest.skip(f"{SWR_API} is not beside the repository")
    return HEADING.findall(SWR_API.read_text(encoding="utf-8"))


def _seed_rows() -> list[tuple[str, str, str]]:
    rows = [row for path in sorted(SEEDS.glob("*.txt")) for row in SEED_ROW.findall(path.read_text(encoding="utf-8"))]
    if not rows:
        pytest.skip(f"no API table among the seeds in {SEEDS}")
    return rows


def _served_routes() -> set[tuple[str, str]]:
    """(method, template) of every SWR API route registered by a workers.api module."""
    served = set()
    for module_info in pkgutil.iter_modules(workers.api.__path__):
        module = importlib.import_module(f"workers.api.{module_info.name}")
        table = getattr(module, "routes", None)
        if isinstance(table, web.RouteTableDef):
            for route in table:
                if isinstance(route, web.RouteDef) and route.path.startswith(("/v2/", "/v3/")):
                    served.add((route.method.upper(), route.path))
    return served


def test_every_documented_route_has_an_action() -> None:
    documented = _documented_routes()
    assert len(documented) >= 50
    missing = [f"{method} {path}" for method, path in documented if (method, path) not in ROUTE_ACTIONS]
    assert not missing, missing


def test_every_served_route_has_an_action() -> None:
    served = _served_routes()
    assert ("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers") in served
    missing = sorted(f"{method} {path}" for method, path in served if (method, path) not in ROUTE_ACTIONS)
    assert not missing, missing


def test_seed_routes_use_the_seed_actions() -> None:
    rows = _seed_rows()
    assert len(rows) >= 45
    wrong = [(m, p, a, ROUTE_ACTIONS[(m, p)].action) for m, p, a in rows if ROUTE_ACTIONS[(m, p)].action != a]
    assert not wrong, wrong


def test_seed_actions_are_all_in_the_catalogue() -> None:
    rows = _seed_rows()
    assert {action for _, _, action in rows} <= set(ACTIONS)


@pytest.mark.parametrize(("method", "template"), sorted(ROUTE_ACTIONS), ids=lambda x: str(x))
def test_route_builds_a_resource_of_its_actions_type(method: str, template: str) -> None:
    route = ROUTE_ACTIONS[(method, template)]
    params = {name: f"{name}-1" for name in PLACEHOLDER.findall(template)}
    requests = route.requests(SCOPE, params, {})
    dependencies = () if (method, template) in WITHOUT_DEPENDENCIES else DEPENDENT_ACTIONS.get(route.action, ())
    assert [r.action for r in requests] == [route.action, *dependencies]
    for request in requests:
        info = action_info(request.action)
        assert info is not None, request.action
        urn = parse_urn(request.resource)
        if info.resource_type is None:
            assert request.resource == ANY
        else:
            assert urn is not None and urn.resource_type == info.resource_type, request.resource
            assert (urn.service, urn.account_id) == ("swr", "acc1")


@pytest.mark.parametrize(
    ("method", "template", "action"),
    [
        ("GET", "/v2/manage/repos", "swr:repo:listRepos"),
        ("GET", "/v3/manage/repos", "swr:repo:listRepos"),
        ("GET", "/v2/manage/namespaces/{namespace}/repos/{repository}/tags", "swr:repo:listRepoTags"),
        ("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers", "swr:repo:createTrigger"),
        ("GET", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers", "swr:repo:listTriggers"),
        ("GET", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers/{trigger}", "swr:repo:getTrigger"),
        ("PATCH", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers/{trigger}", "swr:repo:updateTrigger"),
        ("DELETE", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers/{trigger}", "swr:repo:deleteTrigger"),
        (
            "POST",
            "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers/{trigger}/histories/{history_id}/retry",
            "swr:repo:updateTrigger",
        ),
        ("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/retentions", "swr:repo:createRetention"),
        ("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_repo", "swr:repo:createAutoSyncRepoJob"),
        (
            "POST",
            "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_images",
            "swr:repo:createManualSyncRepoJob",
        ),
        (
            "GET",
            "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_job/{job_id}",
            "swr:repo:getSyncRepoJobInfo",
        ),
        ("GET", "/v2/manage/regions", "swr::getDomainOverview"),
        (
            "POST",
            "/v2/{project_id}/instances/{instance_id}/replication/policies",
            "swr:instance:createReplicationPolicy",
        ),
        (
            "POST",
            "/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/webhook/policies/{policy_id}/secret",
            "swr:repository:updateWebhookPolicy",
        ),
        (
            "POST",
            "/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/webhook/policies/{policy_id}/jobs/{job_id}/retry",
            "swr:repository:updateWebhookPolicy",
        ),
        (
            "GET",
            "/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/webhook/policies/{policy_id}/jobs",
            "swr:repository:listWebhookJobs",
        ),
    ],
)
def test_route_action(method: str, template: str, action: str) -> None:
    assert route_action(method.lower(), template).action == action


@pytest.mark.parametrize(
    ("method", "template", "params", "resource"),
    [
        (
            "GET",
            "/v2/manage/namespaces/{namespace}/repos/{repository}/tags",
            {"namespace": "team", "repository": "a$b"},
            "swr:region-a:acc1:repo:team/a/b",
        ),
        ("GET", "/v2/manage/repos", {}, "swr:region-a:acc1:repo:*"),
        ("GET", "/v2/manage/repos", {"namespace": "team"}, "swr:region-a:acc1:repo:team/*"),
        ("GET", "/v2/manage/namespaces", {}, "swr:region-a:acc1:namespace:*"),
        ("POST", "/v2/manage/namespaces", {"namespace": "new"}, "swr:region-a:acc1:namespace:new"),
        ("POST", "/v2/manage/namespaces", {}, "swr:region-a:acc1:namespace:*"),
        ("POST", "/v2/manage/namespaces/{namespace}/repos", {"namespace": "team"}, "swr:region-a:acc1:repo:team/*"),
        (
            "DELETE",
            "/v2/manage/namespaces/{namespace}/access",
            {"namespace": "team"},
            "swr:region-a:acc1:namespace:team",
        ),
        ("POST", "/v2/manage/utils/secret", {}, "*"),
        (
            "GET",
            "/v2/{project_id}/instances/{instance_id}/replication/policies",
            {"project_id": "p", "instance_id": "local"},
            "swr:region-a:acc1:instance:local",
        ),
        (
            "POST",
            "/v2/{project_id}/instances/{instance_id}/namespaces/{namespace_name}/webhook/policies",
            {"project_id": "p", "instance_id": "local", "namespace_name": "team"},
            "swr:region-a:acc1:repository:local/team",
        ),
        (
            "GET",
            "/v2/{project_id}/instances/{instance_id}/webhook/policies",
            {"project_id": "p", "instance_id": "local"},
            "swr:region-a:acc1:repository:local/*",
        ),
    ],
)
def test_route_resource(method: str, template: str, params: dict[str, str], resource: str) -> None:
    [request] = route_action(method, template).requests(SCOPE, params)
    assert request.resource == resource


def test_sync_checks_upload_where_it_copies_to() -> None:
    route = route_action("POST", "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_images")
    context = {"SWR:TARGETREGION": "region-b", "swr:targetnamespace": "mirror", "g:UserName": "alice"}
    requests = route.requests(SCOPE, {"namespace": "team", "repository": "api"}, context)
    resources = {r.action: r.resource for r in requests}
    assert resources["swr:repo:download"] == "swr:region-a:acc1:repo:team/api"
    assert resources["swr:repo:upload"] == "swr:region-b:acc1:repo:mirror/api"
    assert all(r.context["g:username"] == "alice" for r in requests)
    [own, *_] = route.requests(SCOPE, {"namespace": "team", "repository": "api"})
    same_place = {r.action: r.resource for r in route.requests(SCOPE, {"namespace": "team", "repository": "api"})}
    assert same_place["swr:repo:upload"] == own.resource


def test_unknown_route() -> None:
    with pytest.raises(UnknownRoute, match="GET /v2/manage/nothing"):
        route_action("get", "/v2/manage/nothing")
    with pytest.raises(UnknownRoute):
        route_action("PUT", "/v2/manage/namespaces/{namespace}/repos/{repository}/triggers")


def test_catalogue_levels_follow_the_seed() -> None:
    info = ACTIONS["swr:repo:createRepoShare"]
    assert (info.level.value, info.resource_type, info.condition_keys[0]) == (
        "permission_management",
        "repo",
        "swr:TargetAccountId",
    )
    assert ACTIONS["swr::createLoginSecret"].resource_type is None
    assert action_info("SWR:REPO:DOWNLOAD") is ACTIONS["swr:repo:download"]
    assert action_info("swr:repo:nothing") is None
