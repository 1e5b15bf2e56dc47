"""Access control end to end: users, keys, policies and SWR grants enforced on the real service.

SDK (AK/SK of a user) ──► authn ──► authorization (policies + grants) ──► handler ──► audit trail
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkswr.v2 import (
    CreateNamespaceAuthRequest,
    CreateTriggerRequest,
    CreateTriggerRequestBody,
    CreateUserRepositoryAuthRequest,
    DeleteNamespaceAuthRequest,
    DeleteTriggerRequest,
    ListReposDetailsRequest,
    ListRepositoryTagsRequest,
    ListTriggersDetailsRequest,
    ShowNamespaceAuthRequest,
    UpdateNamespaceAuthRequest,
    UserAuth,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.sdk import call, sdk
from tests.support.service import (
    DISTRIBUTION_TYPE,
    INGRESS_TOKEN,
    SECRET_KEY,
    RunningService,
    running_service,
    service_settings,
    wait_for,
)
from tests.support.services import KafkaBroker
from tests.support.swr_http import signed
from workers import cli
from workers.db.engine import session_factory
from workers.iam.audit import IMAGE_SYNCED, TRIGGER_FIRED, list_audit, record_system_action
from workers.maintenance.commands import sweep_history

EXAMPLE = Path(__file__).parents[1] / "schemas" / "examples" / "distribution" / "push-manifest.json"
REPO_URN = "swr:region-a:default:repo:{}"


@pytest.fixture
async def service(kafka: KafkaBroker, postgres_url: str, topic_prefix: str) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(postgres_url, kafka.bootstrap, topic_prefix)) as running:
        yield running


async def refused(client: Any, method: str, request: Any) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as caught:
        await call(client, method, request)
    return caught.value


async def admin(service: RunningService, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, answer = await signed(service.url, method, path, body)
    assert status == expect, (method, path, answer)
    return answer


async def make_user(service: RunningService, name: str, *policies: str) -> tuple[str, str, str]:
    """A user with a key and the given policies attached: (user id, AK, SK)."""
    user = await admin(service, "POST", "/v3/iam/users", {"name": name}, expect=201)
    key = await admin(service, "POST", f"/v3/iam/users/{name}/access-keys", expect=201)
    for policy in policies:
        await admin(service, "PUT", f"/v3/iam/users/{name}/policies/{quote(policy)}")
    return user["id"], key["access_key"], key["secret_key"]


def trigger(name: str = "redeploy") -> CreateTriggerRequestBody:
    return CreateTriggerRequestBody(
        action="update",
        app_type="deployments",
        application="web",
        cluster_id="c1",
        cluster_name="prod",
        cluster_ns="default",
        condition="v1",
        container="",
        enable="true",
        name=name,
        trigger_mode="cce",
        trigger_type="tag",
    )


async def push(service: RunningService, repository: str, tag: str) -> None:
    """A Distribution push notification through the ingress, as the registry would send it."""
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["events"][0]["id"] = f"evt-{repository}-{tag}"
    document["events"][0]["target"].update(repository=repository, tag=tag)
    headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": DISTRIBUTION_TYPE}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{service.url}/events/distribution", json=document, headers=headers) as response,
    ):
        assert response.status == 202, await response.text()


async def test_read_only_user_lists_triggers_but_cannot_create_one(service: RunningService) -> None:
    await call(sdk(service), "create_trigger", CreateTriggerRequest(namespace="team", repository="app", body=trigger()))
    _, ak, sk = await make_user(service, "reader")
    await admin(service, "POST", "/v3/iam/groups", {"name": "readers"}, expect=201)
    await admin(service, "PUT", f"/v3/iam/groups/readers/policies/{quote('SWR ReadOnlyAccess')}")
    await admin(service, "PUT", "/v3/iam/groups/readers/users/reader")
    reader = sdk(service, ak, sk)

    listed = await call(reader, "list_triggers_details", ListTriggersDetailsRequest(namespace="team", repository="app"))
    assert [t.name for t in listed.body] == ["redeploy"]
    denied = await refused(
        reader, "create_trigger", CreateTriggerRequest(namespace="team", repository="app", body=trigger("mine"))
    )
    assert (denied.status_code, denied.error_code) == (403, "SWR.0403")
    assert "swr:repo:createTrigger" in denied.error_msg and REPO_URN.format("team/app") in denied.error_msg

    status, answer = await signed(service.url, "GET", "/v3/iam/users", ak=ak, sk=sk)
    assert status == 403 and "iam:users:list" in answer["error_msg"]
    status, answer = await signed(service.url, "GET", "/v2/manage/no-such-route", ak=ak, sk=sk)
    assert status == 403 and "no IAM action" in answer["error_msg"]  # unknown routes are denied, not 404
    events = await admin(service, "GET", "/v3/iam/audit?principal=reader&action=swr:repo:createTrigger")
    [event] = events["events"]
    assert (event["status"], event["decision"], event["access_key"]) == (403, "implicit-deny", ak)
    assert event["route"] == "POST /v2/manage/namespaces/{namespace}/repos/{repository}/triggers"
    assert event["request_id"] and event["source_ip"] == "127.0.0.1"

    await push(service, "team/app", "v1")  # fires the trigger; cluster c1 is unknown, so it fails at once

    async def fired() -> Any:
        found = await admin(service, "GET", "/v3/iam/audit?action=system:trigger:*")
        return found["events"]

    [event] = await wait_for(fired)
    assert (event["principal"], event["resource"]) == ("system", "team/app:v1")
    assert "trigger" in event["detail"] and "failed" in event["detail"]


async def test_a_deny_on_delete_trigger_holds_for_one_repository_only(service: RunningService) -> None:
    admin_sdk = sdk(service)
    for repository in ("app", "web"):
        request = CreateTriggerRequest(namespace="team", repository=repository, body=trigger())
        await call(admin_sdk, "create_trigger", request)
    bad = {"Version": "1.1", "Statement": [{"Effect": "Refuse", "Action": ["swr:repo:deleteTrigger"]}]}
    status, answer = await signed(service.url, "POST", "/v3/iam/policies", {"name": "broken", "document": bad})
    assert status == 400 and answer["error_msg"].startswith("document.Statement[0].Effect"), answer
    never = {
        "Version": "1.1",
        "Statement": [
            {
                "Sid": "KeepAppTriggers",
                "Effect": "Deny",
                "Action": ["swr:repo:deleteTrigger"],
                "Resource": ["swr:*:*:repo:team/app"],
            }
        ],
    }
    await admin(service, "POST", "/v3/iam/policies", {"name": "keep-app-triggers", "document": never}, expect=201)
    _, ak, sk = await make_user(service, "operator", "SWR OperateAccess", "keep-app-triggers")
    operator = sdk(service, ak, sk)

    denied = await refused(
        operator, "delete_trigger", DeleteTriggerRequest(namespace="team", repository="app", trigger="redeploy")
    )
    assert denied.status_code == 403
    assert "swr:repo:deleteTrigger" in denied.error_msg and REPO_URN.format("team/app") in denied.error_msg
    assert "KeepAppTriggers" in denied.error_msg and "keep-app-triggers" in denied.error_msg
    await call(operator, "delete_trigger", DeleteTriggerRequest(namespace="team", repository="web", trigger="redeploy"))
    mirror = {
        "Version": "1.1",
        "Statement": [
            {"Effect": "Allow", "Action": ["swr:repo:*Sync*", "swr:repo:download", "swr::createLoginSecret"]},
            {"Effect": "Allow", "Action": ["swr:repo:upload"], "Resource": ["swr:region-a:*:repo:*"]},
        ],
    }
    await admin(service, "POST", "/v3/iam/policies", {"name": "mirror-here", "document": mirror}, expect=201)
    _, mirror_ak, mirror_sk = await make_user(service, "mirror", "mirror-here")
    sync = {"remoteRegionId": "region-b", "remoteNamespace": "copies", "syncAuto": True, "override": False}
    path = "/v2/manage/namespaces/team/repos/app/sync_repo"
    status, answer = await signed(service.url, "POST", path, sync, ak=mirror_ak, sk=mirror_sk)
    assert status == 403 and "swr:repo:upload on swr:region-b:default:repo:copies/app" in answer["error_msg"]
    left = await call(
        admin_sdk, "list_triggers_details", ListTriggersDetailsRequest(namespace="team", repository="web")
    )
    assert not left.body


async def test_sdk_grants_give_read_on_one_namespace(service: RunningService) -> None:
    admin_sdk = sdk(service)
    await push(service, "team/app", "v1")
    await push(service, "other/app", "v1")

    async def listed(namespace: str) -> bool:
        status, tags = await signed(service.url, "GET", f"/v2/manage/namespaces/{namespace}/repos/app/tags")
        return status == 200 and len(tags) == 1

    await wait_for(lambda: listed("team"))
    await wait_for(lambda: listed("other"))
    viewer_id, ak, sk = await make_user(service, "viewer")
    viewer = sdk(service, ak, sk)
    tags = ListRepositoryTagsRequest(namespace="team", repository="app")
    assert (await refused(viewer, "list_repository_tags", tags)).status_code == 403

    auth = [UserAuth(user_id=viewer_id, user_name="viewer", auth=1)]
    await call(admin_sdk, "create_namespace_auth", CreateNamespaceAuthRequest(namespace="team", body=auth))
    assert [t.tag for t in (await call(viewer, "list_repository_tags", tags)).body] == ["v1"]
    elsewhere = await refused(
        viewer, "list_repository_tags", ListRepositoryTagsRequest(namespace="other", repository="app")
    )
    assert elsewhere.status_code == 403 and REPO_URN.format("other/app") in elsewhere.error_msg
    repos = await call(viewer, "list_repos_details", ListReposDetailsRequest())
    assert [(r.namespace, r.name) for r in repos.body] == [("team", "app")]  # the grant filters the list
    create = CreateTriggerRequest(namespace="team", repository="app", body=trigger())
    assert (await refused(viewer, "create_trigger", create)).status_code == 403  # read is not edit

    shown = await call(admin_sdk, "show_namespace_auth", ShowNamespaceAuthRequest(namespace="team"))
    assert [(a.user_name, a.auth) for a in shown.others_auths] == [("viewer", 1)]
    edit = [UserAuth(user_id=viewer_id, user_name="viewer", auth=3)]
    await call(admin_sdk, "update_namespace_auth", UpdateNamespaceAuthRequest(namespace="team", body=edit))
    await call(viewer, "create_trigger", create)
    own = await call(viewer, "show_namespace_auth", ShowNamespaceAuthRequest(namespace="team"))
    assert (own.self_auth.user_name, own.self_auth.auth) == ("viewer", 3)

    repo_auth = CreateUserRepositoryAuthRequest(namespace="other", repository="app", body=auth)
    await call(admin_sdk, "create_user_repository_auth", repo_auth)
    await call(viewer, "list_repository_tags", ListRepositoryTagsRequest(namespace="other", repository="app"))
    await call(admin_sdk, "delete_namespace_auth", DeleteNamespaceAuthRequest(namespace="team", body=[viewer_id]))
    assert (await refused(viewer, "list_repository_tags", tags)).status_code == 403
    grants = await admin(service, "GET", "/v3/iam/grants?user=viewer")
    assert [(g["namespace"], g["repository"], g["level"]) for g in grants["grants"]] == [("other", "app", "read")]


async def raw_call(
    service: RunningService, path: str, ak: str, sk: str, *, date: datetime | None = None, sent_path: str | None = None
) -> tuple[int, dict[str, Any], str]:
    """GET ``path`` signed like the SDK, optionally with another date or sent to another path.

    Returns the status, the JSON body and the ``X-Request-Id`` the service answered with."""
    headers = {"Content-Type": "application/json", "X-Project-Id": "default"}
    if date is not None:
        headers["X-Sdk-Date"] = date.strftime("%Y%m%dT%H%M%SZ")
    request = SdkRequest(
        method="GET",
        schema="http",
        host=urlsplit(service.url).netloc,
        resource_path=path,
        query_params=[],
        header_params=headers,
    )
    Signer(BasicCredentials(ak, sk)).sign(request)
    sent = {k: str(v) for k, v in request.header_params.items()}
    async with aiohttp.ClientSession() as http, http.get(service.url + (sent_path or path), headers=sent) as response:
        return response.status, await response.json(), response.headers["X-Request-Id"]


async def test_bad_signatures_stale_dates_and_disabled_keys_get_401(service: RunningService) -> None:
    _, ak, sk = await make_user(service, "robot", "SWR ReadOnlyAccess")
    path = "/v2/manage/namespaces/team/repos/app/triggers"
    assert (await raw_call(service, path, ak, sk))[0] == 200
    tampered = await raw_call(service, path, ak, sk, sent_path="/v2/manage/namespaces/team/repos/web/triggers")
    assert tampered[0] == 401 and tampered[1]["error_code"] == "APIGW.0301"
    assert (await raw_call(service, path, ak, "not-the-secret"))[1]["error_code"] == "APIGW.0301"
    for skew in (timedelta(minutes=-16), timedelta(minutes=16)):
        stale = await raw_call(service, path, ak, sk, date=datetime.now(UTC) + skew)
        assert stale[0] == 401 and stale[1]["error_code"] == "APIGW.0304"

    await admin(service, "PATCH", f"/v3/iam/access-keys/{ak}", {"enabled": False})
    disabled = await raw_call(service, path, ak, sk)
    assert disabled[0] == 401 and disabled[1]["error_code"] == "APIGW.0303"
    await admin(service, "PATCH", f"/v3/iam/access-keys/{ak}", {"enabled": True})
    assert (await raw_call(service, path, ak, sk))[0] == 200
    await admin(service, "DELETE", f"/v3/iam/access-keys/{ak}")
    status, _, request_id = await raw_call(service, path, ak, sk)
    assert status == 401 and len(request_id) == 32
    events = await admin(service, "GET", f"/v3/iam/audit?principal={ak}&limit=3")
    assert [e["status"] for e in events["events"]] == [401, 200, 401]
    assert (events["events"][0]["decision"], events["events"][0]["request_id"]) == ("unauthenticated", request_id)


def run_cli(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(argv)
    return code, buffer.getvalue()


async def test_cli_creates_users_keys_policies_grants_and_lists_the_audit_trail(
    service: RunningService, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database_url: {service.settings.database_url}\nsecrets: {{keys: ['{SECRET_KEY}']}}\n", encoding="utf-8"
    )
    policy = tmp_path / "team-triggers.json"
    statements = [
        {
            "Effect": "Allow",
            "Action": ["swr:repo:listTriggers", "swr:repo:createTrigger"],
            "Resource": "swr:*:*:repo:team/*",
        },
        {"Effect": "Deny", "Action": ["swr:repo:deleteTrigger"]},
    ]
    policy.write_text(json.dumps({"Version": "1.1", "Statement": statements}), encoding="utf-8")

    async def cli_run(*argv: str) -> str:
        code, output = await asyncio.to_thread(run_cli, ["--config", str(config), *argv])
        assert code == 0, (argv, output)
        return output

    assert "created user carol" in await cli_run("iam", "user", "create", "carol")
    key = json.loads(await cli_run("iam", "key", "create", "carol", "--json"))
    assert set(key) == {"access_key", "secret_key"}
    created = json.loads(await cli_run("iam", "policy", "create", "team-triggers", "--file", str(policy), "--json"))
    assert created["name"] == "team-triggers" and created["system"] is False
    await cli_run("iam", "policy", "attach", "carol", "team-triggers")
    await cli_run("iam", "policy", "attach", "carol", "SWR ReadOnlyAccess")
    granted = json.loads(await cli_run("iam", "grant", "carol", "other/app", "edit", "--json"))
    assert (granted["namespace"], granted["repository"], granted["auth"]) == ("other", "app", 3)

    carol = sdk(service, key["access_key"], key["secret_key"])
    await call(carol, "create_trigger", CreateTriggerRequest(namespace="team", repository="app", body=trigger()))
    await call(carol, "create_trigger", CreateTriggerRequest(namespace="other", repository="app", body=trigger()))
    denied = DeleteTriggerRequest(namespace="other", repository="app", trigger="redeploy")
    assert (await refused(carol, "delete_trigger", denied)).status_code == 403  # the Deny beats the grant

    events = json.loads(await cli_run("audit", "list", "--principal", "carol", "--json"))
    assert [e["action"] for e in events][:3] == [
        "swr:repo:deleteTrigger",
        "swr:repo:createTrigger",
        "swr:repo:createTrigger",
    ]
    assert (events[0]["status"], events[0]["decision"]) == (403, "explicit-deny")
    text = await cli_run("audit", "list", "--action", "swr:repo:delete*", "--since", "1h")
    assert "carol" in text and "403" in text


async def test_history_sweep_deletes_audit_rows_past_their_retention(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        await record_system_action(session, TRIGGER_FIRED, "team/app:v1", "old", now=now - timedelta(days=10))
        await record_system_action(session, IMAGE_SYNCED, "team/app:v1", "recent", now=now - timedelta(days=2))
    async with sessions.begin() as session:
        await sweep_history(session, now - timedelta(days=30), audit_older_than=now - timedelta(days=7))
    async with sessions() as session:
        assert [e["detail"] for e in await list_audit(session, action="system:*")] == ["recent"]
