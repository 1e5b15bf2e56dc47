"""Fault scenario 4: duplicate and replayed envelopes, three times each, have one effect each.

::

    ingress ◄── every envelope x3, the same events re-batched, Harbor payloads x3, deletes x3
       └─► image-events ─► inventory: one row state per tag and digest, one history row per event
                        └─► triggers: one delivery per (policy or trigger, event)
                               ├─► receiver: one webhook-id per event, sent once
                               └─► Kubernetes stand-in: one rollout per (trigger, event)
    replay x3 of a delivered and of a dead-lettered delivery: the same webhook-id, no new rows

Registries retry notifications until they get a 2xx, and Distribution may re-batch what it
retries; the README promises that neither fires twice nor lets a late duplicate overwrite
newer state. Re-batched envelopes also put a delete and an older duplicate of its push in one
envelope, in both orders, so both land in one consumer batch.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.faults.conftest import ScenarioCounts
from tests.faults.corpus import trigger_body
from tests.faults.duplicate_events import (
    COPIES,
    REGISTRY,
    REGISTRY_HOST,
    ROLLED_OUT,
    Request,
    expected_effects,
    send_plan,
)
from tests.faults.effects import BrokerProbe, groups_of
from tests.support.kube_api import KubeApiServer
from tests.support.receiver import Answer, Received, WebhookReceiver
from tests.support.service import (
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
    wait_for,
)
from tests.support.services import KafkaBroker
from tests.support.swr_http import signed
from workers.runtime.kafka import Topics

REGION = "region-a"
POLICIES = "/v2/default/instances/local/namespaces/{namespace}/webhook/policies"
TRIGGERS = "/v2/manage/namespaces/team/repos/app0/triggers"
CONCURRENCY = 8


@dataclass
class Sender:
    """Posts to the ingress, ``CONCURRENCY`` at a time; every request must be accepted (202)."""

    url: str
    http: aiohttp.ClientSession
    posted: int = 0
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))

    async def post(self, path: str, document: Any, content_type: str) -> None:
        headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": content_type}
        async with self._slots, self.http.post(f"{self.url}{path}", data=json.dumps(document), headers=headers) as r:
            assert r.status == 202, (r.status, await r.text())
        self.posted += 1

    async def all(self, requests: Sequence[Request]) -> None:
        await asyncio.gather(*(self.post(path, document, kind) for path, document, kind in requests))


# -- the service -------------------------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(token="kube-token") as server:
        server.add_workload("deployments", "default", "web", containers={"web": "nginx:1"})
        yield server


@pytest.fixture
async def service(
    kafka: KafkaBroker, postgres_url: str, topic_prefix: str, kube: KubeApiServer
) -> AsyncIterator[RunningService]:
    settings = service_settings(
        postgres_url,
        kafka.bootstrap,
        topic_prefix,
        regions={REGION: {"registry": REGISTRY, "insecure": True}},
        clusters={"c1": {"name": "prod", "server": kube.url, "token": "kube-token"}},
        triggers={
            "allowed_networks": ["127.0.0.0/8"],
            "breaker_failures": 1000,
            "concurrency_per_target": 8,
            "retry_schedule_s": [0, 0.2, 0.2],
        },
    )
    async with running_service(settings) as running:
        yield running


async def create_policy(service: RunningService, namespace: str, address: str, **extra: Any) -> int:
    body = {
        "name": f"notify-{namespace}",
        "targets": [{"type": "http", "address": address}],
        "event_types": ["PUSH_ARTIFACT", "DELETE_ARTIFACT"],
        "enabled": True,
        **extra,
    }
    status, answer = await signed(service.url, "POST", POLICIES.format(namespace=namespace), body)
    assert status == 201, answer
    return int(answer["id"])


async def create_trigger(service: RunningService) -> None:
    body = trigger_body() | {"condition": ";".join(f"v{i}" for i in ROLLED_OUT), "trigger_type": "tag"}
    status, answer = await signed(service.url, "POST", TRIGGERS, body)
    assert status == 201, answer


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def no_delivery_in_flight(engine: AsyncEngine) -> bool:
    (count,) = (await rows(engine, "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'running')"))[0]
    return bool(count == 0)


# -- the checks --------------------------------------------------------------------------------


@dataclass
class Tally:
    """Effects found against effects expected, per kind; the report sums them."""

    applied: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def compare(self, kind: str, found: Any, expected: Any) -> None:
        found_set, expected_set = set(found), set(expected)
        self.applied[kind] = len(found_set & expected_set)
        self.extra[kind] = len(found_set - expected_set) + (len(found) - len(found_set))
        self.missing[kind] = len(expected_set - found_set)
        if self.extra[kind] or self.missing[kind]:
            sample = sorted(map(str, found_set ^ expected_set))[:40]
            self.problems.append(f"{kind}: {self.extra[kind]} extra, {self.missing[kind]} missing, e.g. {sample}")


def identity(received: Received) -> tuple[str, str, str, str | None]:
    payload = json.loads(received.body)
    resource = payload["event_data"]["resources"][0]
    name = payload["event_data"]["repository"]["repo_full_name"]
    return payload["type"], name, resource["tag"], resource["digest"]


def rolled_out_images(kube: KubeApiServer) -> list[str]:
    images = []
    for patch in kube.patches():
        for container in patch.body["spec"]["template"]["spec"]["containers"]:
            images.append(container["image"])
    return images


async def check_effects(
    tally: Tally, engine: AsyncEngine, receiver: WebhookReceiver, kube: KubeApiServer, policy_id: int
) -> None:
    expected = expected_effects()
    (history,) = (await rows(engine, "SELECT count(*) FROM image_events"))[0]
    tally.applied["history"] = min(history, expected.history)
    tally.extra["history"] = max(0, history - expected.history)
    tally.missing["history"] = max(0, expected.history - history)
    artifacts = await rows(engine, "SELECT name, ref, kind, deleted_at IS NOT NULL FROM artifacts")
    found_rows = [((name, ref), (kind, deleted)) for name, ref, kind, deleted in artifacts]
    tally.compare("artifact rows", found_rows, expected.rows.items())

    deliveries = await rows(
        engine,
        "SELECT event_type, namespace || '/' || repository, coalesce(tag, digest), digest FROM deliveries"
        " WHERE policy_id = :policy",
        policy=policy_id,
    )
    tally.compare("webhook deliveries", [tuple(row) for row in deliveries], expected.webhooks)
    by_id: dict[str, set[tuple[str, str, str, str | None]]] = defaultdict(set)
    sends: dict[str, int] = defaultdict(int)
    for received in receiver.received:
        by_id[received.headers["webhook-id"]].add(identity(received))
        sends[received.headers["webhook-id"]] += 1
    mixed = [webhook_id for webhook_id, events in by_id.items() if len(events) != 1]
    if mixed:
        tally.problems.append(f"webhook-ids carrying several events: {mixed[:5]}")
    events_sent = [next(iter(events)) for events in by_id.values()]
    tally.compare("webhook events", events_sent, expected.webhooks)
    resent = sum(count - 1 for count in sends.values())
    tally.extra["webhook re-sends"] = resent  # every receiver answer was 200: nothing to retry
    if resent:
        tally.problems.append(f"{resent} webhook requests repeated a webhook-id answered 200")

    rollouts = await rows(engine, "SELECT tag, digest, status FROM deliveries WHERE trigger_id IS NOT NULL")
    rollout_images = [f"{REGISTRY_HOST}/team/app0:{tag}@{digest}" for tag, digest, _ in rollouts]
    tally.compare("rollout deliveries", rollout_images, expected.rollouts)
    tally.compare("rolled-out images", set(rolled_out_images(kube)), expected.rollouts)
    unfinished = [row for row in rollouts if row[2] != "succeeded"]
    if unfinished:
        tally.problems.append(f"rollout deliveries not succeeded: {unfinished}")


async def replay(service: RunningService, path: str) -> int:
    status, answer = await signed(service.url, "POST", path)
    assert status in (202, 409), (status, answer)
    return status


async def replay_three_times(
    tally: Tally,
    service: RunningService,
    engine: AsyncEngine,
    receiver: WebhookReceiver,
    policy_id: int,
    namespace: str,
    attempts_per_replay: int,
    concurrently: bool,
) -> str:
    """Replays the policy's first delivery x3, counting sends and rows against the promise; says what it saw.

    Promised (README, Triggers): a replay re-sends the same delivery, schedule restarted, with
    the same ``webhook-id`` and body; a delivery still in flight is refused (409).
    """
    ((job_id, deliveries_before),) = await rows(
        engine,
        "SELECT min(id), count(*) FROM deliveries WHERE policy_id = :policy",
        policy=policy_id,
    )
    webhook_id = f"msg_{job_id}"
    path = f"{POLICIES.format(namespace=namespace)}/{policy_id}/jobs/{job_id}/retry"

    def seen() -> list[Received]:
        return [r for r in receiver.received if r.headers["webhook-id"] == webhook_id]

    async def finished(expected_requests: int) -> bool:
        return len(seen()) >= expected_requests and await no_delivery_in_flight(engine)

    accepted = 0
    first = len(seen())
    if concurrently:
        statuses = await asyncio.gather(*(replay(service, path) for _ in range(COPIES)))
        accepted = statuses.count(202)
        await wait_for(functools.partial(finished, first + accepted * attempts_per_replay))
    else:
        for _ in range(COPIES):
            assert await replay(service, path) == 202
            accepted += 1
            await wait_for(functools.partial(finished, first + accepted * attempts_per_replay))
    await asyncio.sleep(0.5)  # a replay that sent more than promised would show up here
    requests = seen()
    (deliveries_after,) = (
        await rows(engine, "SELECT count(*) FROM deliveries WHERE policy_id = :policy", policy=policy_id)
    )[0]
    kind, promised = f"replays of {namespace}", first + accepted * attempts_per_replay
    tally.applied[kind] = min(len(requests), promised) - first
    tally.extra[kind] = max(0, len(requests) - promised) + max(0, deliveries_after - deliveries_before)
    tally.missing[kind] = max(0, promised - len(requests))
    if accepted < 1:
        tally.problems.append(f"{kind}: no replay was accepted")
    if tally.extra[kind] or tally.missing[kind]:
        tally.problems.append(
            f"{kind}: {len(requests)} sends of {webhook_id}, promised {promised}; "
            f"delivery rows {deliveries_before} → {deliveries_after}"
        )
    if len({r.body for r in requests}) != 1:
        tally.problems.append(f"{kind}: the body of {webhook_id} changed")
    return f"{first}+{accepted}x{attempts_per_replay} sends of one webhook-id ({COPIES - accepted} refused 409)"


async def test_duplicated_and_replayed_envelopes_have_one_effect_each(
    service: RunningService,
    engine: AsyncEngine,
    kube: KubeApiServer,
    topic_prefix: str,
    fault_report: ScenarioCounts,
) -> None:
    fault_report.scenario = "4. duplicated + replayed envelopes x3"
    topics = Topics.from_prefix(topic_prefix)
    async with (
        WebhookReceiver() as receiver,
        WebhookReceiver() as failing,
        BrokerProbe(service.settings.kafka.bootstrap) as probe,
    ):
        failing.default = Answer(500)
        policy_id = await create_policy(service, "team", f"{receiver.url}/team")
        dead_policy = await create_policy(service, "dlq", f"{failing.url}/dlq", retry_schedule=[0, 0.1])
        await create_trigger(service)

        async with aiohttp.ClientSession() as http:
            sender = Sender(service.url, http)
            for requests in send_plan():
                await sender.all(requests)
        await probe.wait_consumed(topics.image_events, groups_of(topic_prefix), limit_s=40)
        await wait_for(lambda: no_delivery_in_flight(engine), limit_s=20)

        tally = Tally()
        await check_effects(tally, engine, receiver, kube, policy_id)
        delivered_replays = await replay_three_times(
            tally, service, engine, receiver, policy_id, "team", attempts_per_replay=1, concurrently=False
        )
        dead_replays = await replay_three_times(
            tally, service, engine, failing, dead_policy, "dlq", attempts_per_replay=2, concurrently=True
        )

        produced = sum((await probe.end_offsets([topics.image_events])).values())
        fault_report.sent = sender.posted
        fault_report.applied = sum(tally.applied.values())
        fault_report.duplicates = sum(tally.extra.values())
        fault_report.lost = sum(tally.missing.values())
        fault_report.dead_lettered = sum((await probe.end_offsets([topics.dead_letter])).values())
        if fault_report.dead_lettered:
            tally.problems.append(f"{fault_report.dead_lettered} valid events were dead-lettered")
        fault_report.note = (
            f"{produced} events produced; "
            + ", ".join(f"{kind} {count}" for kind, count in tally.applied.items() if not kind.startswith("replays"))
            + f"; replay x3: delivered job {delivered_replays}, dead-lettered job {dead_replays}, no new rows"
        )
        assert not tally.problems, "\n".join(tally.problems)
        assert fault_report.duplicates == 0 and fault_report.lost == 0
