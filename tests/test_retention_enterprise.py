"""Enterprise retention end to end against a real Distribution registry, via the official SDK:
policies and immutable tag rules, executions (dry run, then real) with their tasks and
sub-tasks, backfill of images pushed while the service was not listening, and the CLI.

Push times are controlled by moving the inventory's ``pushed_at`` back after real pushes, or,
for backfill, by the image config's ``created`` time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import (
    CreateImmutableRuleBody,
    CreateImmutableRuleRequest,
    CreateInstanceRetentionPolicyRequest,
    CreateRetentionPolicyRequestBody,
    DeleteImmutableRuleRequest,
    DeleteInstanceRetentionPolicyRequest,
    ExecuteInstanceRetentionPolicyRequest,
    ExecuteRetentionPolicyRequestBody,
    ListImmutableRulesRequest,
    ListInstanceRetentionPoliciesRequest,
    ListInstanceRetentionPolicyExecSubTasksRequest,
    ListInstanceRetentionPolicyExecTasksRequest,
    ListInstanceRetentionPolicyExecutionsRequest,
    ListRepositoryTagsRequest,
    RetentionRule,
    RetentionSelector,
    RuleSelector,
    ShowInstanceRetentionPolicyRequest,
    TriggerConfig,
    TriggerSetting,
    UpdateImmutableRuleBody,
    UpdateImmutableRuleRequest,
    UpdateInstanceRetentionPolicyRequest,
    UpdateRetentionPolicyRequestBody,
)
from sqlalchemy import update

from tests.support import oci
from tests.support.sdk import call, sdk
from tests.support.service import INGRESS_TOKEN, RunningService, running_service, service_settings
from tests.support.services import DistributionRegistry, KafkaBroker, free_port
from tests.support.swr_http import signed
from workers import cli
from workers.db.engine import create_engine, session_factory
from workers.db.models import Artifact
from workers.retention.backfill import KnownTag, RegistryTag, backfill_writes
from workers.retention.executions import execution_tasks

INSTANCE = "/v2/default/instances/local"
POLICIES = INSTANCE + "/namespaces/team/retention/policies"
NOW = datetime.now(UTC)


@pytest.fixture
def listen_port() -> int:
    return free_port()


@pytest.fixture
def registry(request: pytest.FixtureRequest, listen_port: int) -> Iterator[DistributionRegistry]:
    """Notifies the service's ingress, unless parametrized ``"silent"`` (pushes the service never hears of)."""
    if getattr(request, "param", "notifying") == "silent":
        with DistributionRegistry() as reg:
            yield reg
        return
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
        retention={"max_percent": 80, "grace_days": 7},
    )
    async with running_service(settings) as running:
        yield running


async def eventually(check: Any, limit_s: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)
    return result


def selector(decoration: str, pattern: str) -> RetentionSelector:
    return RetentionSelector(kind="doublestar", decoration=decoration, pattern=pattern, extras="")


def keep_latest(k: int, tags: str = "v*", repositories: str = "**") -> RetentionRule:
    return RetentionRule(
        priority=0,
        disabled=False,
        action="retain",
        template="latestPushedK",
        params={"latestPushedK": k},
        tag_selectors=[selector("matches", tags)],
        scope_selectors={"repository": [selector("repoMatches", repositories)]},
        repo_scope_mode="regular",
    )


async def seed(service: RunningService, registry: DistributionRegistry, repo: str, ages_days: dict[str, int]) -> None:
    """Push one image per tag, wait until the inventory lists them, move their push times back."""
    for tag in ages_days:
        await oci.push_image(registry.url, f"team/{repo}", tag)

    async def recorded() -> bool:
        try:
            answer = await call(
                sdk(service), "list_repository_tags", ListRepositoryTagsRequest(namespace="team", repository=repo)
            )
        except ClientRequestException:  # 404 until the first event is recorded
            return False
        return {t.tag for t in answer.body or []} >= set(ages_days)

    await eventually(recorded)
    engine = create_engine(service.settings.database_url)
    try:
        async with session_factory(engine).begin() as session:
            for tag, days in ages_days.items():
                await session.execute(
                    update(Artifact)
                    .where(Artifact.name == f"team/{repo}", Artifact.ref == tag)
                    .values(pushed_at=NOW - timedelta(days=days))
                )
    finally:
        await engine.dispose()


async def execute(service: RunningService, policy_id: int, *, dry_run: bool) -> Any:
    """Run the policy now and wait until the execution is final; returns the execution."""
    client = sdk(service)
    where = {"instance_id": "local", "namespace_name": "team", "policy_id": policy_id}
    body = ExecuteRetentionPolicyRequestBody(dry_run=dry_run)
    started = await call(
        client, "execute_instance_retention_policy", ExecuteInstanceRetentionPolicyRequest(**where, body=body)
    )

    async def final() -> Any:
        listed = await call(
            client, "list_instance_retention_policy_executions", ListInstanceRetentionPolicyExecutionsRequest(**where)
        )
        found = next(e for e in listed.executions if e.id == started.id)  # listed at once: created pending
        return found if found.status != "InProgress" else None

    return await eventually(final)


async def decisions(service: RunningService, policy_id: int, execution_id: int) -> dict[str, dict[str, Any]]:
    """repository → tag → sub-task, for every task of the execution."""
    client = sdk(service)
    where = {"instance_id": "local", "namespace_name": "team", "policy_id": policy_id, "execution_id": execution_id}
    tasks = await call(
        client, "list_instance_retention_policy_exec_tasks", ListInstanceRetentionPolicyExecTasksRequest(**where)
    )
    found: dict[str, dict[str, Any]] = {}
    for task in tasks.tasks:
        subtasks = await call(
            client,
            "list_instance_retention_policy_exec_sub_tasks",
            ListInstanceRetentionPolicyExecSubTasksRequest(**where, task_id=task.id),
        )
        assert subtasks.total == len(subtasks.sub_tasks) and all(s.job_id == task.id for s in subtasks.sub_tasks)
        found[task.repository] = {s.tag: s for s in subtasks.sub_tasks}
        assert task.retained == task.total - len({s.digest for s in subtasks.sub_tasks if s.action == "delete"})
    return found


async def present(registry: DistributionRegistry, repo: str, tag: str) -> bool:
    return await oci.get_manifest(registry.url, f"team/{repo}", tag) is not None


def run_cli(tmp_path: Path, service: RunningService, *args: str) -> int:
    config = tmp_path / "config.yaml"
    document = {
        "database_url": service.settings.database_url,
        "region": "region-a",
        "regions": {"region-a": {"registry": service.settings.regions["region-a"].registry, "insecure": True}},
    }
    config.write_text(yaml.safe_dump(document))
    return cli.main(["--config", str(config), *args])


async def test_policies_and_immutable_rules_round_trip_through_the_sdk(service: RunningService) -> None:
    client = sdk(service)
    body = CreateRetentionPolicyRequestBody(
        algorithm="or",
        enabled=True,
        name="keep-3",
        rules=[keep_latest(3)],
        trigger=TriggerConfig(type="scheduled", trigger_settings=TriggerSetting(cron="0 0 2 * * *")),
    )
    where = {"instance_id": "local", "namespace_name": "team"}
    created = await call(
        client, "create_instance_retention_policy", CreateInstanceRetentionPolicyRequest(**where, body=body)
    )
    shown = await call(
        client, "show_instance_retention_policy", ShowInstanceRetentionPolicyRequest(**where, policy_id=created.id)
    )
    assert (shown.name, shown.namespace_name, shown.trigger.trigger_settings.cron) == ("keep-3", "team", "0 0 2 * * *")
    assert shown.rules[0].params == {"latestPushedK": 3} and shown.rules[0].tag_selectors[0].pattern == "v*"
    listed = await call(
        client,
        "list_instance_retention_policies",
        ListInstanceRetentionPoliciesRequest(instance_id="local", namespace_id=shown.namespace_id),
    )
    assert listed.total == 1 and listed.retentions[0].id == created.id

    update_body = UpdateRetentionPolicyRequestBody(
        algorithm="or", enabled=False, name="keep-5", rules=[keep_latest(5)], trigger=TriggerConfig(type="manual")
    )
    await call(
        client,
        "update_instance_retention_policy",
        UpdateInstanceRetentionPolicyRequest(**where, policy_id=created.id, body=update_body),
    )
    shown = await call(
        client, "show_instance_retention_policy", ShowInstanceRetentionPolicyRequest(**where, policy_id=created.id)
    )
    assert (shown.name, shown.enabled, shown.trigger.type, shown.rules[0].params) == (
        "keep-5", False, "manual", {"latestPushedK": 5},
    )  # fmt: skip
    status, answer = await signed(service.url, "POST", POLICIES, {"name": "keep-5", "rules": []})
    assert status == 409, answer

    tags = [RuleSelector(kind="doublestar", decoration="matches", pattern="release-*", extras="")]
    rule = await call(
        client,
        "create_immutable_rule",
        CreateImmutableRuleRequest(
            **where, body=CreateImmutableRuleBody(priority=0, disabled=False, action="immutable",
                                                  template="immutable_template", tag_selectors=tags,
                                                  scope_selectors={"repository": []})
        ),
    )  # fmt: skip
    await call(
        client,
        "update_immutable_rule",
        UpdateImmutableRuleRequest(**where, immutable_rule_id=rule.id, body=UpdateImmutableRuleBody(disabled=True)),
    )
    rules = await call(client, "list_immutable_rules", ListImmutableRulesRequest(instance_id="local"))
    assert [(r.id, r.namespace_name, r.disabled, r.tag_selectors[0].pattern) for r in rules.immutable_rules] == [
        (rule.id, "team", True, "release-*")
    ]
    await call(client, "delete_immutable_rule", DeleteImmutableRuleRequest(**where, immutable_rule_id=rule.id))
    await call(
        client, "delete_instance_retention_policy", DeleteInstanceRetentionPolicyRequest(**where, policy_id=created.id)
    )
    with pytest.raises(ClientRequestException) as gone:
        await call(
            client, "show_instance_retention_policy", ShowInstanceRetentionPolicyRequest(**where, policy_id=created.id)
        )
    assert gone.value.status_code == 404

    for path, bad, field in BAD_BODIES:
        status, answer = await signed(service.url, "POST", path, bad)
        assert status == 400 and answer["error_msg"].startswith(field), (field, answer)


def _rule(**overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"template": "latestPushedK", "params": {"latestPushedK": 1}, "action": "retain"}
    return {"name": "bad", "algorithm": "or", "rules": [{**rule, **overrides}]}


IMMUTABLE = INSTANCE + "/namespaces/team/immutabletagrules"
ANY_TAG = {"kind": "doublestar", "decoration": "matches", "pattern": "x"}
BAD_BODIES = [
    (POLICIES, _rule(params={"latestPushedK": -1}), "rules[0].params.latestPushedK"),
    (POLICIES, _rule(template="size_rule"), "rules[0].template"),
    (POLICIES, _rule(action="delete"), "rules[0].action"),
    (POLICIES, _rule(tag_selectors=[{"kind": "regexp", "decoration": "matches", "pattern": "("}]),
     "rules[0].tag_selectors[0].pattern"),
    (POLICIES, _rule(scope_selectors={"repository": [{"kind": "glob", "decoration": "repoMatches", "pattern": "*"}]}),
     "rules[0].scope_selectors.repository[0].kind"),
    (POLICIES, {**_rule(), "algorithm": "and"}, "algorithm"),
    (POLICIES, {**_rule(), "trigger": {"type": "scheduled", "trigger_settings": {"cron": "61 * * * *"}}},
     "trigger.trigger_settings.cron"),
    (IMMUTABLE, {"tag_selectors": []}, "tag_selectors"),
    (IMMUTABLE, {"tag_selectors": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "x"}]},
     "tag_selectors[0].decoration"),
    (IMMUTABLE, {"action": "retain", "tag_selectors": [ANY_TAG]}, "action"),
]  # fmt: skip


async def test_dry_run_then_real_run_with_selectors_immutable_tags_and_cli_restore(
    service: RunningService, registry: DistributionRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(service, registry, "app", {"v1": 50, "v2": 40, "v3": 30, "v4": 20, "v5": 10, "dev-1": 60})
    await seed(service, registry, "other", {"v1": 50, "v2": 40, "v3": 30})
    client = sdk(service)
    where = {"instance_id": "local", "namespace_name": "team"}
    tags = [RuleSelector(kind="doublestar", decoration="matches", pattern="v1", extras="")]
    immutable = await call(
        client,
        "create_immutable_rule",
        CreateImmutableRuleRequest(**where, body=CreateImmutableRuleBody(tag_selectors=tags)),
    )
    # keep the 2 newest v* tags of repositories named app; other is outside every rule's scope
    body = CreateRetentionPolicyRequestBody(algorithm="or", name="app", rules=[keep_latest(2, repositories="app")])
    policy = await call(
        client, "create_instance_retention_policy", CreateInstanceRetentionPolicyRequest(**where, body=body)
    )

    dry = await execute(service, policy.id, dry_run=True)
    assert dry.dry_run and dry.status == "Succeed" and dry.trigger == "MANUAL"
    plan = await decisions(service, policy.id, dry.id)
    assert set(plan) == {"app", "other"} and {s.action for s in plan["other"].values()} == {"retain"}
    actions = {tag: s.action for tag, s in plan["app"].items()}
    assert actions == {"v5": "retain", "v4": "retain", "v3": "delete", "v2": "delete", "dev-1": "delete",
                       "v1": "retain"}  # fmt: skip
    assert "immutable" in plan["app"]["v1"].status_text and plan["app"]["v3"].status_text.startswith("dry run")
    assert await present(registry, "app", "v3") and await present(registry, "app", "dev-1")  # a dry run deletes nothing

    real = await execute(service, policy.id, dry_run=False)
    assert real.status == "Succeed" and not real.dry_run
    assert {s.status for s in (await decisions(service, policy.id, real.id))["app"].values()} == {"Succeed"}
    for tag in ("v3", "v2", "dev-1"):
        assert not await present(registry, "app", tag)
    for tag in ("v1", "v4", "v5"):
        assert await present(registry, "app", tag)
    for tag in ("v1", "v2", "v3"):
        assert await present(registry, "other", tag)

    # without the immutable rule, v1 would go as well
    await call(
        client,
        "update_immutable_rule",
        UpdateImmutableRuleRequest(
            **where, immutable_rule_id=immutable.id, body=UpdateImmutableRuleBody(tag_selectors=tags, disabled=True)
        ),
    )
    again = await execute(service, policy.id, dry_run=True)
    assert (await decisions(service, policy.id, again.id))["app"]["v1"].action == "delete"

    assert await asyncio.to_thread(run_cli, tmp_path, service, "retention", "restore", "team/app:v2") == 0
    assert "restored team/app@sha256:" in capsys.readouterr().out and await present(registry, "app", "v2")
    assert await asyncio.to_thread(run_cli, tmp_path, service, "retention", "restore", "team/app:v9") == 1


@pytest.mark.parametrize("registry", ["silent"], indirect=True)
async def test_backfill_makes_unseen_images_known_and_subject_to_rules(
    service: RunningService, registry: DistributionRegistry, tmp_path: Path
) -> None:
    ages = {"old-1": 100, "old-2": 90, "new-1": 1}
    pushed = {tag: await oci.push_image(registry.url, "team/app", tag, created=NOW - timedelta(days=days))
              for tag, days in ages.items()}  # fmt: skip
    await oci.push_index(registry.url, "team/app", "multi", created=NOW - timedelta(days=80))
    await oci.push_image(registry.url, "team/tools", "t1", created=NOW - timedelta(days=5))
    engine = create_engine(service.settings.database_url)
    try:  # old-2 was seen by a notification two days ago: that record wins over the image's age
        async with session_factory(engine).begin() as session:
            at = NOW - timedelta(days=2)
            session.add(
                Artifact(region="region-a", name="team/app", namespace="team", repository="app", ref="old-2",
                         kind="tag", tag="old-2", digest=pushed["old-2"].digest, pushed_at=at, event_at=at,
                         updated_at=at)
            )  # fmt: skip
    finally:
        await engine.dispose()
    client = sdk(service)
    where = {"instance_id": "local", "namespace_name": "team"}
    rule = RetentionRule(template="nDaysSinceLastPush", params={"nDaysSinceLastPush": 30}, tag_selectors=[
        selector("matches", "**")], scope_selectors={"repository": [selector("repoMatches", "**")]})  # fmt: skip
    body = CreateRetentionPolicyRequestBody(algorithm="or", name="month", rules=[rule])
    policy = await call(
        client, "create_instance_retention_policy", CreateInstanceRetentionPolicyRequest(**where, body=body)
    )
    before = await execute(service, policy.id, dry_run=True)
    assert set(await decisions(service, policy.id, before.id)) == {"app"}  # only the row inserted above

    status, report = await signed(service.url, "POST", "/v2/manage/namespaces/team/repos/app/retentions/backfill")
    assert status == 200, report
    assert (report["tags"], report["recorded"], report["known"]) == (4, 3, 1), report
    assert await asyncio.to_thread(run_cli, tmp_path, service, "retention", "backfill", "team") == 0
    listed = await call(client, "list_repository_tags", ListRepositoryTagsRequest(namespace="team", repository="tools"))
    assert [t.tag for t in listed.body] == ["t1"]

    real = await execute(service, policy.id, dry_run=False)
    assert real.status == "Succeed", real
    assert not await present(registry, "app", "old-1") and not await present(registry, "app", "multi")
    for repo, tag in (("app", "old-2"), ("app", "new-1"), ("tools", "t1")):
        assert await present(registry, repo, tag)


def test_backfill_writes_only_what_the_inventory_lacks() -> None:
    listed_at = datetime(2026, 6, 1, tzinfo=UTC)
    old = listed_at - timedelta(days=40)
    registry = {
        "new": RegistryTag("sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", 10, old),
        "same": RegistryTag("sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json", 10, old),
        "epoch": RegistryTag("sha256:" + "c" * 64, "application/vnd.oci.image.manifest.v1+json", 10,
                             datetime(1970, 1, 1, tzinfo=UTC)),
        "rebuilt": RegistryTag("sha256:" + "d" * 64, "application/vnd.oci.image.manifest.v1+json", 10, old),
    }  # fmt: skip
    known = {
        "same": KnownTag("sha256:" + "b" * 64, True, listed_at - timedelta(days=1)),
        "rebuilt": KnownTag("sha256:" + "e" * 64, False, listed_at - timedelta(days=3)),  # deleted after the build
        "vanished": KnownTag("sha256:" + "f" * 64, True, listed_at - timedelta(days=9)),
    }
    writes, report = backfill_writes("region-a", "team/app", listed_at, registry, known)
    by_ref = {(w.ref, w.kind): w for w in writes}
    assert (report.recorded, report.known, report.newer, report.gone) == (2, 1, 1, 1)
    assert by_ref[("new", "tag")].event_at == old and by_ref[("sha256:" + "a" * 64, "manifest")].event_at == old
    assert by_ref[("epoch", "tag")].event_at == listed_at  # a reproducible build's 1970 is no push time
    assert by_ref[("vanished", "tag")].deleted and by_ref[("vanished", "tag")].event_at == listed_at
    assert all(w.namespace == "team" and w.repository == "app" for w in writes)


def test_tasks_of_a_failed_run_show_which_deletions_did_not_happen() -> None:
    plan = [
        {"repository": "app", "digest": "sha256:1", "tags": ["v1", "latest"], "untagged": False, "action": "keep",
         "reasons": ["v1: 1st most recently pushed"]},
        {"repository": "app", "digest": "sha256:2", "tags": ["v2"], "untagged": True, "action": "delete",
         "reasons": ["v2: no rule retains it"]},
        {"repository": "app", "digest": "sha256:3", "tags": ["v3"], "untagged": False, "action": "delete",
         "reasons": ["v3: no rule retains it"]},
        {"repository": "web", "digest": "sha256:4", "tags": ["v1"], "untagged": False, "action": "keep", "reasons": []},
    ]  # fmt: skip
    app, web = execution_tasks("failed", False, plan, [("app", "sha256:2")])
    assert (app.id, app.status, app.total, app.retained) == (1, "Failed", 3, 2)
    assert (web.id, web.status, web.total, web.retained) == (2, "Succeed", 1, 1)
    assert [(s.id, s.tag, s.action, s.status) for s in app.subtasks] == [
        (1, "v1", "retain", "Succeed"), (2, "latest", "retain", "Succeed"), (3, "v2", "delete", "Succeed"),
        (4, "", "delete", "Succeed"), (5, "v3", "delete", "Failed"),
    ]  # fmt: skip
    (stopped, _) = execution_tasks("aborted", False, plan, [])
    assert stopped.status == "Stopped" and stopped.retained == 3
