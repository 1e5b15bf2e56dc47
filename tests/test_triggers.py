"""Triggers end to end: real registry push → signed webhook + workload update, via the official SDK.

registry push ──► ingress ──► broker ──► triggers worker ──► deliveries ──► receiver / apps/v1 server
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import (
    CreateTriggerRequest,
    CreateTriggerRequestBody,
    DeleteTriggerRequest,
    ListTriggersDetailsRequest,
    ShowTriggerRequest,
    UpdateTriggerRequest,
    UpdateTriggerRequestBody,
)
from standardwebhooks.webhooks import Webhook

from tests.support import oci
from tests.support.kube_api import KubeApiServer
from tests.support.receiver import Answer, WebhookReceiver
from tests.support.sdk import sdk
from tests.support.service import (
    DISTRIBUTION_TYPE,
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
)
from tests.support.services import DistributionRegistry, KafkaBroker, free_port
from tests.support.swr_http import signed
from workers import cli

POLICIES = "/v2/default/instances/local/namespaces/team/webhook/policies"
EXAMPLE = Path(__file__).parents[1] / "schemas" / "examples" / "distribution" / "push-manifest.json"


@pytest.fixture
def listen_port() -> int:
    return free_port()


@pytest.fixture
def registry(listen_port: int) -> Iterator[DistributionRegistry]:
    ingress = f"http://127.0.0.1:{listen_port}/events/distribution"
    with DistributionRegistry(notification_url=ingress, notification_token=INGRESS_TOKEN) as reg:
        yield reg


@pytest.fixture
async def kube() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(token="kube-token") as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as server:
        yield server


def trigger_settings(registry_url: str, kube: KubeApiServer, **triggers: Any) -> dict[str, Any]:
    return {
        "regions": {"region-a": {"registry": registry_url, "insecure": True}},
        "clusters": {"c1": {"name": "prod", "server": kube.url, "token": "kube-token"}},
        "triggers": {
            "allowed_networks": ["127.0.0.0/8"],
            "breaker_failures": 50,
            "concurrency_per_target": 4,
            **triggers,
        },
    }


@pytest.fixture
async def service(
    kafka: KafkaBroker,
    postgres_url: str,
    topic_prefix: str,
    registry: DistributionRegistry,
    kube: KubeApiServer,
    listen_port: int,
) -> AsyncIterator[RunningService]:
    extra = trigger_settings(registry.url, kube, retry_schedule_s=[0, 0.3, 0.3])
    settings = service_settings(postgres_url, kafka.bootstrap, topic_prefix, listen=f"127.0.0.1:{listen_port}", **extra)
    async with running_service(settings) as running:
        yield running


def trigger_body(**changes: str) -> CreateTriggerRequestBody:
    fields = {
        "action": "update",
        "app_type": "deployments",
        "application": "web",
        "cluster_id": "c1",
        "cluster_name": "prod",
        "cluster_ns": "default",
        "condition": "v1",
        "container": "",
        "enable": "true",
        "name": "redeploy",
        "trigger_mode": "cce",
        "trigger_type": "tag",
    }
    fields.update(changes)
    return CreateTriggerRequestBody(**fields)


async def create_policy(service: RunningService, address: str, **changes: Any) -> tuple[int, str]:
    body = {
        "name": "notify",
        "description": "tests",
        "targets": [
            {
                "type": "http",
                "address": address,
                "auth_header": "Authorization: Bearer rx",
                "skip_cert_verify": False,
                "address_type": "internet",
            }
        ],
        "event_types": ["PUSH_ARTIFACT", "DELETE_ARTIFACT"],
        "scope_rules": [
            {
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}],
                "scope_selectors": {
                    "repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]
                },
            }
        ],
        "enabled": True,
    }
    body.update(changes)
    status, answer = await signed(service.url, "POST", POLICIES, body)
    assert status == 201, answer
    return int(answer["id"]), str(answer["signing_secret"])


async def jobs(service: RunningService, policy_id: int) -> list[dict[str, Any]]:
    status, answer = await signed(service.url, "GET", f"{POLICIES}/{policy_id}/jobs")
    assert status == 200, answer
    return list(answer["jobs"])


async def eventually(check: Any, limit_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_real_push_fires_signed_webhook_and_updates_the_deployment(
    service: RunningService, registry: DistributionRegistry, kube: KubeApiServer, receiver: WebhookReceiver
) -> None:
    kube.add_workload("deployments", "default", "web", containers={"web": "nginx:1", "sidecar": "envoy:1"})
    client = sdk(service)
    await asyncio.to_thread(
        client.create_trigger, CreateTriggerRequest(namespace="team", repository="app", body=trigger_body())
    )
    policy_id, secret = await create_policy(service, f"{receiver.url}/hook")

    pushed = await oci.push_image(registry.url, "team/app", "v1")

    delivered = await receiver.wait_for(1)
    body = delivered[0].body
    Webhook(secret).verify(body, delivered[0].headers)  # raises on a bad signature
    assert delivered[0].headers["Authorization"] == "Bearer rx"
    payload = json.loads(body)
    assert payload["type"] == "PUSH_ARTIFACT"
    assert payload["event_data"]["repository"]["repo_full_name"] == "team/app"
    assert payload["event_data"]["resources"][0]["tag"] == "v1"

    host = registry.url.split("://", 1)[1]
    expected = f"{host}/team/app:v1@{pushed.digest}"

    async def rolled_out() -> bool:
        return kube.image_of("deployments", "default", "web", "web") == expected

    await eventually(rolled_out)
    assert kube.image_of("deployments", "default", "web", "sidecar") == expected  # container "" = all

    async def history() -> Any:
        shown = await asyncio.to_thread(
            client.show_trigger, ShowTriggerRequest(namespace="team", repository="app", trigger="redeploy")
        )
        done = [h for h in shown.trigger_history if h.result == "success"]
        return done

    (entry,) = await eventually(history)
    assert entry.tag == "v1" and entry.application == "web"
    (job,) = await jobs(service, policy_id)
    assert job["status"] == "Success" and job["event_type"] == "PUSH_ARTIFACT" and job["attempts"] == 1


async def test_sdk_creates_lists_shows_updates_and_deletes_triggers(service: RunningService) -> None:
    client = sdk(service)

    def call(method: str, request: Any) -> Any:
        return getattr(client, method)(request)

    await asyncio.to_thread(
        call, "create_trigger", CreateTriggerRequest(namespace="team", repository="app", body=trigger_body())
    )
    listed = await asyncio.to_thread(
        call, "list_triggers_details", ListTriggersDetailsRequest(namespace="team", repository="app")
    )
    assert [t.name for t in listed.body] == ["redeploy"]
    assert listed.body[0].condition == "v1" and listed.body[0].enable == "true"
    await asyncio.to_thread(
        call,
        "update_trigger",
        UpdateTriggerRequest(
            namespace="team", repository="app", trigger="redeploy", body=UpdateTriggerRequestBody(enable="false")
        ),
    )
    shown = await asyncio.to_thread(
        call, "show_trigger", ShowTriggerRequest(namespace="team", repository="app", trigger="redeploy")
    )
    assert shown.enable == "false" and shown.creator_name == "admin"

    with pytest.raises(ClientRequestException) as duplicate:
        await asyncio.to_thread(
            call, "create_trigger", CreateTriggerRequest(namespace="team", repository="app", body=trigger_body())
        )
    assert duplicate.value.status_code == 409

    await asyncio.to_thread(
        call, "delete_trigger", DeleteTriggerRequest(namespace="team", repository="app", trigger="redeploy")
    )
    with pytest.raises(ClientRequestException) as gone:
        await asyncio.to_thread(
            call, "show_trigger", ShowTriggerRequest(namespace="team", repository="app", trigger="redeploy")
        )
    assert gone.value.status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"trigger_type": "regular", "condition": "(unclosed"}, "condition"),
        ({"trigger_type": "sometimes"}, "trigger_type"),
        ({"app_type": "pods"}, "app_type"),
        ({"application": "Not_A_Name"}, "application"),
        ({"cluster_ns": ""}, "cluster_ns"),
        ({"enable": "maybe"}, "enable"),
    ],
)
async def test_bad_trigger_bodies_get_400_naming_the_field(
    service: RunningService, changes: dict[str, str], field: str
) -> None:
    body = trigger_body(**changes).to_dict()
    status, answer = await signed(service.url, "POST", "/v2/manage/namespaces/team/repos/app/triggers", body)
    assert status == 400, answer
    assert answer["error_msg"].startswith(field), answer


async def post_push(service: RunningService, tag: str, event_id: str, digest: str | None = None) -> None:
    """A Distribution push notification, as the registry would send it."""
    template = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    target = template["events"][0]["target"]
    template["events"][0]["id"] = event_id
    target.update(repository="team/app", tag=tag, **({"digest": digest} if digest else {}))
    headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": DISTRIBUTION_TYPE}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{service.url}/events/distribution", json=template, headers=headers) as response,
    ):
        assert response.status == 202, await response.text()


async def test_receiver_failures_follow_the_schedule_then_succeed_with_one_webhook_id(
    service: RunningService, receiver: WebhookReceiver
) -> None:
    receiver.script([Answer(503, {"Retry-After": "1"}), Answer(500)])
    policy_id, _ = await create_policy(service, f"{receiver.url}/flaky")
    await post_push(service, "v7", "evt-retry-1")

    delivered = await receiver.wait_for(3, timeout_s=15)
    assert len({r.headers["webhook-id"] for r in delivered}) == 1
    assert delivered[1].at - delivered[0].at >= 0.9  # Retry-After: 1 beats the 0.3 s schedule
    assert delivered[2].at - delivered[1].at >= 0.2

    async def succeeded() -> Any:
        found = await jobs(service, policy_id)
        return found if found and found[0]["status"] == "Success" else None

    (job,) = await eventually(succeeded)
    assert job["attempts"] == 3 and job["last_status_code"] == 200


async def test_duplicate_events_fire_once(service: RunningService, receiver: WebhookReceiver) -> None:
    policy_id, _ = await create_policy(service, f"{receiver.url}/once")
    for _ in range(3):
        await post_push(service, "v2", "evt-duplicate-1")
    await receiver.wait_for(1)
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 1
    assert len(await jobs(service, policy_id)) == 1


async def test_410_disables_the_target_and_replay_sends_the_same_message(
    service: RunningService, receiver: WebhookReceiver
) -> None:
    receiver.script([Answer(410)])
    policy_id, _ = await create_policy(service, f"{receiver.url}/gone")
    await post_push(service, "v3", "evt-gone-1")
    await receiver.wait_for(1)

    async def failed() -> Any:
        found = await jobs(service, policy_id)
        return found if found and found[0]["status"] == "Error" else None

    (job,) = await eventually(failed)
    assert "410" in job["status_text"]
    status, policy = await signed(service.url, "GET", f"{POLICIES}/{policy_id}")
    assert status == 200 and policy["targets"][0]["enabled"] is False
    assert policy["targets"][0]["auth_header"] == "Authorization: ******"

    await post_push(service, "v4", "evt-gone-2")  # the disabled target gets nothing
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 1


async def test_replay_of_a_dead_lettered_delivery(service: RunningService, receiver: WebhookReceiver) -> None:
    receiver.script([Answer(500), Answer(500), Answer(500)])
    policy_id, _ = await create_policy(service, f"{receiver.url}/replay")
    await post_push(service, "v5", "evt-replay-1")

    async def dead() -> Any:
        found = await jobs(service, policy_id)
        return found if found and found[0]["status"] == "Error" else None

    (job,) = await eventually(dead)
    assert job["attempts"] == 3 and "gave up after 3 attempts" in job["status_text"]
    status, answer = await signed(service.url, "POST", f"{POLICIES}/{policy_id}/jobs/{job['id']}/retry")
    assert status == 202, answer

    delivered = await receiver.wait_for(4)
    assert delivered[3].headers["webhook-id"] == delivered[0].headers["webhook-id"]

    async def succeeded() -> Any:
        found = await jobs(service, policy_id)
        return found if found and found[0]["status"] == "Success" else None

    await eventually(succeeded)


@pytest.mark.parametrize(
    "address",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/",
        "http://10.1.2.3/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00::1]/",
        "http://does-not-resolve.invalid/",
        "ftp://example.com/",
    ],
)
async def test_forbidden_targets_are_refused_at_save_time(service: RunningService, address: str) -> None:
    body = {"name": "ssrf", "targets": [{"address": address}], "event_types": ["PUSH_ARTIFACT"], "enabled": True}
    status, answer = await signed(service.url, "POST", POLICIES, body)
    assert status == 400, answer
    assert answer["error_msg"].startswith("targets[0].address"), answer


async def test_failed_rollout_is_rolled_back_and_recorded(service: RunningService, kube: KubeApiServer) -> None:
    kube.add_workload("deployments", "default", "api", containers={"api": "api:1"})
    kube.progress_deadline_s = 0.3
    client = sdk(service)
    body = trigger_body(name="verified", application="api", trigger_type="all", condition=".*").to_dict()
    body.update(verify_rollout=True, rollout_timeout=10)
    status, answer = await signed(service.url, "POST", "/v2/manage/namespaces/team/repos/app/triggers", body)
    assert status == 201, answer
    digest = "sha256:" + "c" * 64
    kube.failing_images.add(f"{service.settings.regions['region-a'].registry.split('://')[1]}/team/app:v9@{digest}")
    await post_push(service, "v9", "evt-v9", digest)

    async def rolled_back() -> Any:
        shown = await asyncio.to_thread(
            client.show_trigger, ShowTriggerRequest(namespace="team", repository="app", trigger="verified")
        )
        return [h for h in shown.trigger_history if h.result == "failed"]

    (entry,) = await eventually(rolled_back)
    assert "ProgressDeadlineExceeded" in entry.detail or "timed out" in entry.detail
    assert kube.image_of("deployments", "default", "api", "api") == "api:1"
    status, raw = await signed(service.url, "GET", "/v2/manage/namespaces/team/repos/app/triggers/verified")
    assert raw["trigger_history"][0]["rolled_back_to"] == "api:1"


async def test_a_hanging_receiver_does_not_delay_other_targets(service: RunningService) -> None:
    async with WebhookReceiver() as slow, WebhookReceiver() as fast:
        slow.default = Answer(delay_s=5.0)
        await create_policy(service, f"{slow.url}/slow", name="slow")
        await create_policy(service, f"{fast.url}/fast", name="fast")
        started = asyncio.get_running_loop().time()
        for index in range(6):  # more than the slow target's 4 concurrent slots
            await post_push(service, f"iso{index}", f"evt-isolation-{index}")
        await fast.wait_for(6, timeout_s=4.0)
        assert asyncio.get_running_loop().time() - started < 4.0
        assert len(slow.received) <= 4  # its own slots are busy; the rest wait in its lane


async def test_rotated_secret_signs_with_both_secrets(service: RunningService, receiver: WebhookReceiver) -> None:
    policy_id, first = await create_policy(service, f"{receiver.url}/rotate")
    status, answer = await signed(service.url, "POST", f"{POLICIES}/{policy_id}/secret")
    assert status == 201, answer
    second = answer["signing_secret"]
    assert second != first
    await post_push(service, "v11", "evt-rotate-1")
    (delivery,) = await receiver.wait_for(1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    for secret in (first, second):
        Webhook(secret).verify(delivery.body, delivery.headers)


async def test_cloudevents_target(service: RunningService, receiver: WebhookReceiver) -> None:
    target = {"type": "cloudevents", "address": f"{receiver.url}/ce"}
    await create_policy(service, target["address"], targets=[target])
    await post_push(service, "v12", "evt-cloudevents-1")
    (delivery,) = await receiver.wait_for(1)
    assert delivery.headers["Content-Type"] == "application/cloudevents+json"
    event = json.loads(delivery.body)
    assert event["specversion"] == "1.0" and event["type"] == "harbor.artifact.pushed"
    assert event["subject"].startswith("team/app:v12")


async def test_cli_lists_and_replays_deliveries(
    service: RunningService, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.script([Answer(500), Answer(500), Answer(500)])
    policy_id, _ = await create_policy(service, f"{receiver.url}/cli")
    await post_push(service, "v13", "evt-cli-1")

    async def dead() -> Any:
        found = await jobs(service, policy_id)
        return found if found and found[0]["status"] == "Error" else None

    (job,) = await eventually(dead)
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {service.settings.database_url}\n", encoding="utf-8")
    listed = await asyncio.to_thread(run_cli, ["deliveries", "--config", str(config), "--status", "failed"])
    assert listed[0] == 0 and f"{job['id']}\tfailed\twebhook" in listed[1]
    replayed = await asyncio.to_thread(run_cli, ["replay", "--config", str(config), str(job["id"]), "999999"])
    assert replayed[0] == 1  # one id was not found
    assert f"delivery {job['id']}: queued for replay" in replayed[1] and "999999: not found" in replayed[1]
    await receiver.wait_for(4)


def run_cli(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(argv)
    return code, buffer.getvalue()


async def test_a_slow_attempt_keeps_its_lease_so_another_worker_never_sends_it_again(
    kafka: KafkaBroker,
    postgres_url: str,
    topic_prefix: str,
    registry: DistributionRegistry,
    kube: KubeApiServer,
    receiver: WebhookReceiver,
) -> None:
    """The attempt outlives the 3 s lease; renewal keeps it, while a second worker polls for due work."""
    receiver.default = Answer(delay_s=6.0)
    extra = trigger_settings(registry.url, kube, lease_s=3)
    first = service_settings(postgres_url, kafka.bootstrap, topic_prefix, **extra)
    second = service_settings(postgres_url, kafka.bootstrap, topic_prefix, **extra)
    async with running_service(first) as service, running_service(second, role="worker"):
        policy_id, _ = await create_policy(service, f"{receiver.url}/slow")
        await post_push(service, "lease1", "evt-lease-1")
        await receiver.wait_for(1)
        await asyncio.sleep(8.0)  # > 2 leases: an unrenewed row would have been claimed and sent again
        assert len(receiver.received) == 1
        [job] = await jobs(service, policy_id)
        assert job["status"] == "Success", job
