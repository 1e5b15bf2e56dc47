"""Retention end to end against a real Distribution registry (deletion enabled), via the official SDK.

Push times are controlled by moving the inventory's ``pushed_at`` back after real pushes (the
registry itself does not record when a tag was pushed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import (
    CreateRetentionRequest,
    CreateRetentionRequestBody,
    DeleteRetentionRequest,
    ListRepositoryTagsRequest,
    ListRetentionHistoriesRequest,
    ListRetentionsRequest,
    Rule,
    ShowRetentionRequest,
    TagSelector,
    UpdateRetentionRequest,
    UpdateRetentionRequestBody,
)
from sqlalchemy import update

from tests.support import oci
from tests.support.metrics import sample
from tests.support.sdk import call, sdk
from tests.support.service import INGRESS_TOKEN, RunningService, running_service, service_settings
from tests.support.services import DistributionRegistry, KafkaBroker, free_port
from tests.support.swr_http import signed
from workers.db.engine import create_engine, session_factory
from workers.db.models import Artifact, Delivery

BASE = "/v2/manage/namespaces/team/repos/app/retentions"


@pytest.fixture
def listen_port() -> int:
    return free_port()


@pytest.fixture
def registry(listen_port: int) -> Iterator[DistributionRegistry]:
    ingress = f"http://127.0.0.1:{listen_port}/events/distribution"
    with DistributionRegistry(notification_url=ingress, notification_token=INGRESS_TOKEN) as reg:
        yield reg


@pytest.fixture
async def service(
    kafka: KafkaBroker, postgres_url: str, topic_prefix: str, registry: DistributionRegistry, listen_port: int
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        postgres_url,
        kafka.bootstrap,
        topic_prefix,
        listen=f"127.0.0.1:{listen_port}",
        regions={"region-a": {"registry": registry.url, "insecure": True}},
        retention={"max_percent": 65, "grace_days": 7},
    )
    async with running_service(settings) as running:
        yield running


async def eventually(check: Any, limit_s: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)
    return result


async def seed(service: RunningService, registry: DistributionRegistry, ages_days: dict[str, int]) -> dict[str, str]:
    """Push one image per tag (``latest`` shares v5's digest), wait for the inventory, age the pushes."""
    digests = {}
    for tag in ages_days:
        if tag == "latest":
            continue
        digests[tag] = (await oci.push_image(registry.url, "team/app", tag)).digest
    if "latest" in ages_days:
        body, media_type, digest = await oci.get_manifest(registry.url, "team/app", "v5")
        await oci.push_manifest(registry.url, "team/app", "latest", body, media_type)
        digests["latest"] = digest
    client = sdk(service)

    async def recorded() -> bool:
        try:
            tags = await call(
                client, "list_repository_tags", ListRepositoryTagsRequest(namespace="team", repository="app")
            )
        except ClientRequestException:  # 404 until the first event is recorded
            return False
        return {t.tag for t in tags.body or []} >= set(ages_days)

    await eventually(recorded)
    engine = create_engine(service.settings.database_url)
    try:
        async with session_factory(engine).begin() as session:
            for tag, days in ages_days.items():
                await session.execute(
                    update(Artifact)
                    .where(Artifact.name == "team/app", Artifact.ref == tag)
                    .values(pushed_at=datetime.now(UTC) - timedelta(days=days, minutes=len(tag)))
                )
    finally:
        await engine.dispose()
    return digests


async def present(registry: DistributionRegistry, tag: str) -> bool:
    return await oci.get_manifest(registry.url, "team/app", tag) is not None


async def test_date_rule_deletes_old_tags_keeps_exceptions_and_restore_brings_them_back(
    service: RunningService, registry: DistributionRegistry
) -> None:
    digests = await seed(service, registry, {"v1": 40, "v2": 35, "v3": 20, "v4": 10})
    counters = (
        "rw_retention_digests_deleted_total",
        "rw_retention_tags_deleted_total",
        "rw_retention_tags_restored_total",
    )
    before = {name: sample(name) for name in counters}
    runs = sample("rw_retention_executions_total", mode="apply", outcome="succeeded")
    client = sdk(service)
    rule = Rule(template="date_rule", params={"days": "30"}, tag_selectors=[TagSelector(kind="label", pattern="v1")])
    created = await call(
        client,
        "create_retention",
        CreateRetentionRequest(
            namespace="team", repository="app", body=CreateRetentionRequestBody(algorithm="or", rules=[rule])
        ),
    )

    async def logged() -> Any:
        histories = await call(
            client, "list_retention_histories", ListRetentionHistoriesRequest(namespace="team", repository="app")
        )
        return histories.retention_log

    (entry,) = await eventually(logged)
    assert (entry.tag, entry.retention_id, entry.rule_type) == ("v2", created.id, "date_rule")
    assert not await present(registry, "v2")
    assert await present(registry, "v1") and await present(registry, "v3")  # exception, and young enough

    listed = await call(client, "list_retentions", ListRetentionsRequest(namespace="team", repository="app"))
    assert [r.id for r in listed.body] == [created.id] and listed.body[0].rules[0].template == "date_rule"

    status, answer = await signed(service.url, "POST", f"{BASE}/restore", {"reference": "v2"})
    assert status == 200, answer
    restored = await oci.get_manifest(registry.url, "team/app", "v2")
    assert restored is not None and restored[2] == digests["v2"]

    async def run_counted() -> bool:
        return sample("rw_retention_executions_total", mode="apply", outcome="succeeded") - runs >= 1

    await eventually(run_counted)
    assert {name: sample(name) - before[name] for name in counters} == dict.fromkeys(counters, 1)
    for action in ("system:tag:deleted", "system:image:restored"):  # both in the audit trail
        status, audit = await signed(service.url, "GET", f"/v3/iam/audit?action={action}")
        assert status == 200 and any(digests["v2"] in str(e) for e in audit["events"]), audit


async def test_plan_then_apply_keep_n_explains_every_digest_and_siblings_share_fate(
    service: RunningService, registry: DistributionRegistry
) -> None:
    digests = await seed(service, registry, {"v1": 9, "v2": 8, "v3": 7, "v4": 6, "v5": 1, "latest": 1})
    rules = [{"template": "tag_rule", "params": {"num": 3}, "tag_selectors": []}]
    status, answer = await signed(service.url, "POST", BASE, {"algorithm": "or", "rules": rules, "enabled": False})
    assert status == 201, answer
    policy = answer["id"]
    status, answer = await signed(service.url, "POST", f"{BASE}/{policy}/runs", {"dry_run": True})
    assert status == 202, answer
    (dry,) = await finished_runs(service, policy, 1)
    assert dry["dry_run"] and dry["counts"]["deleted"] == 3  # counted, nothing deleted yet
    assert await present(registry, "v1")
    _, shown = await signed(service.url, "GET", f"{BASE}/{policy}/runs/{dry['id']}")
    plan = {d["digest"]: d for d in shown["plan"]}
    assert set(plan) == set(digests.values())  # every digest explained
    # the newest 3 tags are latest and v5 (one digest) and v4; v1..v3 go
    deleting = {d["digest"] for d in shown["plan"] if d["action"] == "delete"}
    assert deleting == {digests[t] for t in ("v1", "v2", "v3")}
    assert plan[digests["v5"]]["tags"] == ["latest", "v5"] and all(plan[digests["v1"]]["reasons"])

    status, answer = await signed(service.url, "POST", f"{BASE}/{policy}/runs", {"apply_run": dry["id"]})
    assert status == 202, answer
    runs = await finished_runs(service, policy, 2)
    applied = next(r for r in runs if not r["dry_run"])
    assert applied["status"] == "succeeded" and "drift: 0 planned" in applied["detail"], applied
    assert not await present(registry, "v1") and not await present(registry, "v3")
    assert await present(registry, "latest") and await present(registry, "v4")


async def finished_runs(service: RunningService, policy: int, count: int) -> list[dict[str, Any]]:
    async def done() -> Any:
        _, runs = await signed(service.url, "GET", f"{BASE}/{policy}/runs")
        return runs if len(runs) >= count and all(r["finished_at"] for r in runs) else None

    return list(await eventually(done))


async def test_in_use_digests_are_kept_and_the_blast_radius_cap_aborts(
    service: RunningService, registry: DistributionRegistry
) -> None:
    digests = await seed(service, registry, {"v1": 50, "v2": 40, "v3": 30, "v4": 20})
    engine = create_engine(service.settings.database_url)
    try:  # a deployment trigger rolled out v2: it is in use
        async with session_factory(engine).begin() as session:
            now = datetime.now(UTC)
            session.add(
                Delivery(
                    key="trigger:1:evt",
                    kind="deployment",
                    trigger_id=1,
                    target="c/ns/deployments/web",
                    event_id="evt",
                    event_type="PUSH_ARTIFACT",
                    namespace="team",
                    repository="app",
                    tag="v2",
                    digest=digests["v2"],
                    payload="{}",
                    content_type="application/json",
                    status="succeeded",
                    attempts=1,
                    detail="",
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await engine.dispose()
    client = sdk(service)
    keep_recent = Rule(template="date_rule", params={"days": 35}, tag_selectors=[])
    created = await call(
        client,
        "create_retention",
        CreateRetentionRequest(
            namespace="team", repository="app", body=CreateRetentionRequestBody(algorithm="or", rules=[keep_recent])
        ),
    )

    async def logged() -> Any:
        histories = await call(
            client, "list_retention_histories", ListRetentionHistoriesRequest(namespace="team", repository="app")
        )
        return histories.retention_log

    assert [e.tag for e in await eventually(logged)] == ["v1"]  # v2 is older but deployed
    assert await present(registry, "v2")

    # keep only the last day: 2 of 3 remaining digests (v2 is in use) = 67% > the 65% cap
    strict = Rule(template="date_rule", params={"days": 1}, tag_selectors=[])
    await call(
        client,
        "update_retention",
        UpdateRetentionRequest(
            namespace="team",
            repository="app",
            retention_id=created.id,
            body=UpdateRetentionRequestBody(algorithm="or", rules=[strict]),
        ),
    )

    async def aborted() -> Any:
        _, runs = await signed(service.url, "GET", f"{BASE}/{created.id}/runs")
        return [r for r in runs if r["status"] == "aborted"]

    (run,) = await eventually(aborted)
    assert "65" in run["detail"] and await present(registry, "v3") and await present(registry, "v4")
    shown = await call(
        client, "show_retention", ShowRetentionRequest(namespace="team", repository="app", retention_id=created.id)
    )
    assert shown.rules[0].params["days"] == 1
    await call(
        client, "delete_retention", DeleteRetentionRequest(namespace="team", repository="app", retention_id=created.id)
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"algorithm": "or", "rules": [{"template": "tag_rule", "params": {"num": -1}}]}, "rules[0].params.num"),
        ({"algorithm": "or", "rules": [{"template": "date_rule", "params": {"days": 0}}]}, "rules[0].params.days"),
        ({"algorithm": "or", "rules": [{"template": "size_rule", "params": {}}]}, "rules[0].template"),
        ({"algorithm": "and", "rules": []}, "algorithm"),
        (
            {
                "algorithm": "or",
                "rules": [
                    {
                        "template": "tag_rule",
                        "params": {"num": 1},
                        "tag_selectors": [{"kind": "regexp", "pattern": "("}],
                    }
                ],
            },
            "rules[0].tag_selectors[0].pattern",
        ),
    ],
)
async def test_bad_rules_get_400_naming_the_field(service: RunningService, body: dict[str, Any], field: str) -> None:
    status, answer = await signed(service.url, "POST", BASE, body)
    assert status == 400 and answer["error_msg"].startswith(field), answer
