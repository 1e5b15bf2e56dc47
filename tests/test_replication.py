"""Replication end to end between two real Distribution registries, driven by the official SDK.

push to region A ──► ingress ──► broker ──► replication worker ──► copy engine ──► region B (htpasswd)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import (
    CreateImageSyncRepoRequest,
    CreateImageSyncRepoRequestBody,
    CreateInstanceReplicationPolicyRequest,
    CreateManualImageSyncRepoRequest,
    CreateManualImageSyncRepoRequestBody,
    CreateReplicationExecutionRequestBody,
    CreateReplicationPolicyRequestBody,
    DeleteImageSyncRepoRequest,
    DeleteImageSyncRepoRequestBody,
    DeleteInstanceReplicationPolicyRequest,
    ExecuteInstanceReplicationPolicyRequest,
    Filter,
    ListImageAutoSyncReposDetailsRequest,
    ListInstanceReplicationPolicyExecSubTasksRequest,
    ListInstanceReplicationPolicyExecTasksRequest,
    ListInstanceReplicationPolicyExecutionsRequest,
    ListSyncRegionsRequest,
    ReplicationRegistry,
    ShowInstanceReplicationPolicyRequest,
    ShowSyncJobRequest,
    TriggerConfig,
    TriggerSetting,
)
from sqlalchemy import func, select

from tests.support import oci
from tests.support.metrics import sample
from tests.support.sdk import call, sdk
from tests.support.service import (
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
    wait_for,
)
from tests.support.services import DistributionRegistry, KafkaBroker, free_port
from tests.support.swr_http import signed
from workers import cli
from workers.db.engine import create_engine
from workers.db.models import ScheduleSlot
from workers.maintenance.commands import RECONCILE_REPLICATION

B_AUTH = ("replicator", "b-secret")


@pytest.fixture
def listen_port() -> int:
    return free_port()


@pytest.fixture
def region_a(listen_port: int) -> Iterator[DistributionRegistry]:
    ingress = f"http://127.0.0.1:{listen_port}/events/distribution"
    with DistributionRegistry(notification_url=ingress, notification_token=INGRESS_TOKEN) as reg:
        yield reg


@pytest.fixture
def region_b() -> Iterator[DistributionRegistry]:
    with DistributionRegistry(auth=B_AUTH) as reg:
        yield reg


@pytest.fixture
async def service(
    kafka: KafkaBroker,
    postgres_url: str,
    topic_prefix: str,
    region_a: DistributionRegistry,
    region_b: DistributionRegistry,
    listen_port: int,
) -> AsyncIterator[RunningService]:
    regions = {
        "region-a": {"registry": region_a.url, "insecure": True},
        "region-b": {"registry": region_b.url, "insecure": True, "username": B_AUTH[0], "password": B_AUTH[1]},
    }
    settings = service_settings(
        postgres_url, kafka.bootstrap, topic_prefix, listen=f"127.0.0.1:{listen_port}", regions=regions
    )
    async with running_service(settings) as running:
        await start_up_schedules_done(running)
        yield running


async def start_up_schedules_done(service: RunningService, limit_s: float = 30.0) -> None:
    """Wait for the reconcile a fresh service runs at start-up (its schedule's latest slot).

    Left running, it can pick up a rule a test has just created and queue that test's repairs
    itself, so the test's own reconcile would find them in flight and queue nothing.
    """
    engine = create_engine(service.settings.database_url)
    reconcile_slots = select(func.count()).where(ScheduleSlot.job == RECONCILE_REPLICATION)
    pending = select(func.count()).where(ScheduleSlot.completed_at.is_(None))
    deadline = asyncio.get_running_loop().time() + limit_s
    try:
        while True:
            async with engine.connect() as connection:
                if await connection.scalar(reconcile_slots) and not await connection.scalar(pending):
                    return
            assert asyncio.get_running_loop().time() < deadline, "start-up schedules did not complete"
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def jobs_until_final(client: Any, repository: str, count: int, limit_s: float = 30.0) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        response = await call(client, "show_sync_job", ShowSyncJobRequest(namespace="team", repository=repository))
        final = [j for j in response.body or [] if j.status not in ("waiting", "running")]
        if len(final) >= count:
            return final
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"jobs not final in time: {[(j.tag, j.status) for j in response.body or []]}")
        await asyncio.sleep(0.2)


async def manifest_in(registry: DistributionRegistry, repository: str, tag: str, auth: Any = None) -> Any:
    return await oci.get_manifest(registry.url, repository, tag, auth=auth)


async def test_push_to_region_a_appears_in_region_b_with_the_same_digest(
    service: RunningService, region_a: DistributionRegistry, region_b: DistributionRegistry
) -> None:
    client = sdk(service)
    body = CreateImageSyncRepoRequestBody(
        remote_region_id="region-b", remote_namespace="dr", sync_auto=True, override=False
    )
    await call(
        client, "create_image_sync_repo", CreateImageSyncRepoRequest(namespace="team", repository="app", body=body)
    )
    rules = await call(
        client,
        "list_image_auto_sync_repos_details",
        ListImageAutoSyncReposDetailsRequest(namespace="team", repository="app"),
    )
    assert [(r.remote_region_id, r.remote_namespace, r.sync_auto) for r in rules.body] == [("region-b", "dr", True)]

    succeeded = sample("rw_replication_jobs_total", operation="copy", outcome="success")
    copied_bytes, copied_blobs = (
        sample("rw_replication_bytes_copied_total"),
        sample("rw_replication_blobs_total", result="copied"),
    )
    pushed = await oci.push_image(region_a.url, "team/app", "v1", layers=(300_000, 2_000))
    (job,) = await jobs_until_final(client, "app", 1)
    assert job.status == "success" and job.tag == "v1" and job.remote_region_id == "region-b"

    async def counted() -> bool:  # the runner counts right after it writes the outcome
        return sample("rw_replication_jobs_total", operation="copy", outcome="success") - succeeded == 1

    await wait_for(counted)
    assert sample("rw_replication_bytes_copied_total") - copied_bytes >= 302_000
    assert sample("rw_replication_blobs_total", result="copied") - copied_blobs == 3  # two layers and the config
    copied = await manifest_in(region_b, "dr/app", "v1", auth=B_AUTH)
    assert copied is not None and copied[0] == pushed.manifest and copied[2] == pushed.digest

    regions = await call(client, "list_sync_regions", ListSyncRegionsRequest())
    assert sorted(r.region_id for r in regions.body) == ["region-a", "region-b"]
    await call(
        client,
        "delete_image_sync_repo",
        DeleteImageSyncRepoRequest(
            namespace="team",
            repository="app",
            body=DeleteImageSyncRepoRequestBody(remote_region_id="region-b", remote_namespace="dr"),
        ),
    )


async def test_manual_sync_and_override_semantics(
    service: RunningService, region_a: DistributionRegistry, region_b: DistributionRegistry
) -> None:
    client = sdk(service)
    first = await oci.push_image(region_a.url, "team/web", "v1")
    await oci.push_image(region_a.url, "team/web", "v2")
    other = await oci.push_image(region_b.url, "dr/web", "v2", auth=B_AUTH)  # a different image already there

    def manual(tags: list[str], override: bool) -> CreateManualImageSyncRepoRequest:
        body = CreateManualImageSyncRepoRequestBody(
            image_tag=tags, override=override, remote_namespace="dr", remote_region_id="region-b"
        )
        return CreateManualImageSyncRepoRequest(namespace="team", repository="web", body=body)

    ids = await call(client, "create_manual_image_sync_repo", manual(["v1", "v2"], override=False))
    assert len(ids.body) == 2
    jobs = {j.tag: j.status for j in await jobs_until_final(client, "web", 2)}
    assert jobs == {"v1": "success", "v2": "existed"}
    assert (await manifest_in(region_b, "dr/web", "v1", auth=B_AUTH))[2] == first.digest
    assert (await manifest_in(region_b, "dr/web", "v2", auth=B_AUTH))[2] == other.digest  # left alone

    await call(client, "create_manual_image_sync_repo", manual(["v1"], override=False))  # same digest: success
    final = await jobs_until_final(client, "web", 3)
    assert sorted(j.status for j in final) == ["existed", "success", "success"]

    filtered = await call(
        client,
        "show_sync_job",
        ShowSyncJobRequest(namespace="team", repository="web", filter="limit::1|offset::0|status::existed"),
    )
    assert [j.tag for j in filtered.body] == ["v2"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"remoteRegionId": "mars", "remoteNamespace": "dr", "syncAuto": True, "override": False}, "remoteRegionId"),
        ({"remoteRegionId": "region-b", "remoteNamespace": "Bad NS", "syncAuto": True}, "remoteNamespace"),
        ({"remoteRegionId": "region-b", "remoteNamespace": "dr", "syncAuto": "often"}, "syncAuto"),
    ],
)
async def test_bad_sync_bodies_get_400_naming_the_field(
    service: RunningService, body: dict[str, Any], field: str
) -> None:
    status, answer = await signed(service.url, "POST", "/v2/manage/namespaces/team/repos/app/sync_repo", body)
    assert status == 400 and answer["error_msg"].startswith(field), answer


async def test_unknown_job_filter_status_is_refused(service: RunningService) -> None:
    with pytest.raises(ClientRequestException) as refused:
        await call(
            sdk(service),
            "show_sync_job",
            ShowSyncJobRequest(namespace="team", repository="web", filter="status::sideways"),
        )
    assert refused.value.status_code == 400


async def test_reconcile_copies_what_no_event_did_and_repairs_drift(
    service: RunningService, region_a: DistributionRegistry, region_b: DistributionRegistry, tmp_path: Path
) -> None:
    client = sdk(service)
    # a rule without automatic sync: pushes queue nothing, so only reconcile can bring these over
    body = CreateImageSyncRepoRequestBody(remote_region_id="region-b", remote_namespace="dr", sync_auto=False)
    await call(
        client, "create_image_sync_repo", CreateImageSyncRepoRequest(namespace="team", repository="db", body=body)
    )
    old = await oci.push_image(region_a.url, "team/db", "v1")
    new = await oci.push_image(region_a.url, "team/db", "v2")

    status, answer = await signed(service.url, "POST", "/v2/manage/namespaces/team/repos/db/sync_repo/reconcile")
    assert status == 202, answer
    final = await jobs_until_final(client, "db", 2)
    assert {(j.tag, j.status) for j in final} == {("v1", "success"), ("v2", "success")}
    assert (await manifest_in(region_b, "dr/db", "v1", auth=B_AUTH))[2] == old.digest

    await oci.delete_manifest(region_b.url, "dr/db", new.digest, auth=B_AUTH)  # drift: v2 vanished from B
    config = tmp_path / "config.yaml"
    regions = {k: v.model_dump(mode="json") for k, v in service.settings.regions.items()}
    config.write_text(yaml.safe_dump({"database_url": service.settings.database_url, "regions": regions}))
    code, output = await asyncio.to_thread(run_cli, ["sync", "reconcile", "team/db", "--config", str(config)])
    assert code == 0 and "1 repair job(s) queued" in output, output
    assert (await manifest_eventually(region_b, "dr/db", "v2"))[2] == new.digest

    argv = ["sync", "run", "team/db:v1", "--to", "region-b", "--namespace", "cli", "--follow", "--config", str(config)]
    code, output = await asyncio.to_thread(run_cli, argv)
    assert code == 0 and "success" in output and "100%" in output, output
    assert (await manifest_in(region_b, "cli/db", "v1", auth=B_AUTH))[2] == old.digest


async def manifest_eventually(registry: DistributionRegistry, repository: str, tag: str, limit_s: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while (found := await manifest_in(registry, repository, tag, auth=B_AUTH)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"{repository}:{tag} never arrived"
        await asyncio.sleep(0.2)
    return found


def run_cli(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(argv)
    return code, buffer.getvalue()


async def registry_id(service: RunningService, region: str) -> int:
    status, answer = await signed(service.url, "GET", "/v2/default/instances/local/registries")
    assert status == 200, answer
    return next(int(r["id"]) for r in answer["registries"] if r["name"] == region)


async def execution_until_done(client: Any, policy_id: int, limit_s: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        listed = await call(
            client,
            "list_instance_replication_policy_executions",
            ListInstanceReplicationPolicyExecutionsRequest(instance_id="local", policy_id=policy_id),
        )
        done = [e for e in listed.executions or [] if e.status != "InProgress"]
        if done:
            return done[0]
        assert asyncio.get_running_loop().time() < deadline, [e.status for e in listed.executions or []]
        await asyncio.sleep(0.2)


async def test_sdk_policy_execution_copies_what_the_filters_select(
    service: RunningService, region_a: DistributionRegistry, region_b: DistributionRegistry
) -> None:
    client = sdk(service)
    kept = await oci.push_image(region_a.url, "team/api", "v1.0")
    await oci.push_image(region_a.url, "team/api", "dev")  # the tag filter leaves it
    await oci.push_image(region_a.url, "other/api", "v1.0")  # the name filter leaves it
    body = CreateReplicationPolicyRequestBody(
        name="dr-team",
        description="team to region-b",
        src_registry=ReplicationRegistry(id=await registry_id(service, "region-a")),
        dest_registry=ReplicationRegistry(id=await registry_id(service, "region-b")),
        dest_namespace="dr2",
        filters=[Filter(type="name", value="team/**"), Filter(type="tag", value="v*")],
        repo_scope_mode="regular",
        trigger=TriggerConfig(type="manual", trigger_settings=TriggerSetting(cron="")),
        override=True,
        enabled=True,
    )
    created = await call(
        client,
        "create_instance_replication_policy",
        CreateInstanceReplicationPolicyRequest(instance_id="local", body=body),
    )
    shown = await call(
        client,
        "show_instance_replication_policy",
        ShowInstanceReplicationPolicyRequest(instance_id="local", policy_id=created.id),
    )
    assert shown.name == "dr-team" and shown.dest_namespace == "dr2" and len(shown.filters) == 2

    execution = await call(
        client,
        "execute_instance_replication_policy",
        ExecuteInstanceReplicationPolicyRequest(
            instance_id="local", body=CreateReplicationExecutionRequestBody(policy_id=created.id)
        ),
    )
    done = await execution_until_done(client, created.id)
    assert (done.id, done.status, done.total, done.succeed) == (execution.id, "Succeed", 1, 1)
    tasks = await call(
        client,
        "list_instance_replication_policy_exec_tasks",
        ListInstanceReplicationPolicyExecTasksRequest(instance_id="local", execution_id=execution.id),
    )
    (task,) = tasks.tasks
    assert task.src_resource == "team/api:v1.0" and task.dst_resource == "dr2/api:v1.0" and task.status == "Succeed"
    subtasks = await call(
        client,
        "list_instance_replication_policy_exec_sub_tasks",
        ListInstanceReplicationPolicyExecSubTasksRequest(
            instance_id="local", execution_id=execution.id, task_id=task.id
        ),
    )
    assert subtasks.sub_tasks[0].digest == kept.digest
    assert (await manifest_in(region_b, "dr2/api", "v1.0", auth=B_AUTH))[2] == kept.digest
    assert await manifest_in(region_b, "dr2/api", "dev", auth=B_AUTH) is None

    await call(
        client,
        "delete_instance_replication_policy",
        DeleteInstanceReplicationPolicyRequest(instance_id="local", policy_id=created.id),
    )


async def test_event_based_policy_replicates_pushes_and_deletions(
    service: RunningService, region_a: DistributionRegistry, region_b: DistributionRegistry
) -> None:
    body = {
        "name": "events",
        "src_registry": {"id": await registry_id(service, "region-a")},
        "dest_registry": {"id": await registry_id(service, "region-b")},
        "dest_namespace": "ev",
        "filters": [
            {"type": "name", "value": "team/svc"},
            {"type": "tag", "value": "tmp-.*", "kind": "regexp", "decoration": "excludes"},
        ],
        "trigger": {"type": "event_based"},
        "override": True,
        "enabled": True,
        "replicate_deletion": True,
    }
    status, answer = await signed(service.url, "POST", "/v2/default/instances/local/replication/policies", body)
    assert status == 201, answer
    pushed = await oci.push_image(region_a.url, "team/svc", "v1")
    await oci.push_image(region_a.url, "team/svc", "tmp-1")  # excluded by the regexp filter
    assert (await manifest_eventually(region_b, "ev/svc", "v1"))[2] == pushed.digest

    await oci.delete_manifest(region_a.url, "team/svc", pushed.digest)
    deadline = asyncio.get_running_loop().time() + 20
    while await manifest_in(region_b, "ev/svc", "v1", auth=B_AUTH) is not None:
        assert asyncio.get_running_loop().time() < deadline, "the deletion was not replicated"
        await asyncio.sleep(0.2)
    assert await manifest_in(region_b, "ev/svc", "tmp-1", auth=B_AUTH) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"trigger": {"type": "scheduled", "trigger_settings": {"cron": "every day"}}},
            "trigger.trigger_settings.cron",
        ),
        ({"trigger": {"type": "sometimes"}}, "trigger.type"),
        ({"filters": [{"type": "tag", "value": "(", "kind": "regexp"}]}, "filters[0]"),
        ({"filters": [{"type": "colour", "value": "red"}]}, "filters[0].type"),
        ({"dest_registry": {"id": 999}}, "dest_registry.id"),
    ],
)
async def test_bad_replication_policies_get_400_naming_the_field(
    service: RunningService, changes: dict[str, Any], field: str
) -> None:
    body = {
        "name": "bad",
        "src_registry": {"id": await registry_id(service, "region-a")},
        "dest_registry": {"id": await registry_id(service, "region-b")},
        **changes,
    }
    status, answer = await signed(service.url, "POST", "/v2/default/instances/local/replication/policies", body)
    assert status == 400 and answer["error_msg"].startswith(field), answer
