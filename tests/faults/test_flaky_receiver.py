"""A webhook receiver failing 30 % with 5xx and 10 % with timeouts, for 400 image events.

registry events ──► ingress ──► broker ──► triggers worker ──► deliveries ──► flaky receiver

Every delivery must end ``succeeded`` or ``failed`` (dead-lettered after the policy's own retry
schedule), its attempts spaced at least by that schedule's delays minus the jitter, never more
attempts than the schedule has, and every webhook-id answered 2xx in time counted once as
delivered. What the receiver answers is decided per (webhook-id, n-th request) from a seed, so a
run is reproducible whatever order the requests arrive in. The target's circuit breaker keeps
its default threshold, so it opens and half-opens throughout; deferred deliveries must still
come back (they once waited for the 10-minute lost-probe timeout). The schedule is short
(seconds), so the real clock serves.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from tests.faults.conftest import ScenarioCounts
from tests.support.receiver import Answer, WebhookReceiver
from tests.support.service import DISTRIBUTION_TYPE, INGRESS_TOKEN, running_service, service_settings, wait_for
from tests.support.services import KafkaBroker
from tests.support.swr_http import signed
from workers.db.engine import create_engine, session_factory
from workers.db.models import Delivery
from workers.triggers import store
from workers.triggers.retry import JITTER_FRACTION

SEED = 20261122
EVENTS = 400
ENVELOPE = 50  # events per notification POST (the Distribution format allows many)
ERROR_RATE, TIMEOUT_RATE = 0.30, 0.10
TOTAL_TIMEOUT_S = 0.8
HANG_S = 2.5  # a "timeout" answer comes (200) long after the worker stopped waiting
POLICY_SCHEDULE = (0.0, 1.5, 2.0, 2.5)  # per policy: at most 4 attempts
GLOBAL_SCHEDULE = (0.0, 0.1)  # must not be the one used: the policy's wins
# An attempt is due ``delay`` after it started; the receiver sees it a little later than that
# start (policy cache, connect, parse). Lower bounds allow that much, nothing more.
ARRIVAL_SLACK_S = 0.25
POLICIES = "/v2/default/instances/local/namespaces/team/webhook/policies"


@dataclass(frozen=True)
class Hit:
    webhook_id: str
    nth: int  # 0 for the first request carrying this webhook-id
    kind: str  # "ok" | "error" | "timeout"
    status: int
    at: float  # time.monotonic() on arrival


class FlakyReceiver(WebhookReceiver):
    """Answers 5xx, hangs past the sender's timeout, or 200, by a seeded draw per request."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.hits: dict[str, list[Hit]] = defaultdict(list)

    def answer_for(self, request: web.Request) -> Answer:
        webhook_id = request.headers.get("webhook-id", "")
        nth = len(self.hits[webhook_id])
        draw = random.Random(f"{self.seed}:{webhook_id}:{nth}")
        roll = draw.random()
        if roll < ERROR_RATE:
            kind, answer = "error", Answer(draw.choice((500, 502, 503, 504)))
        elif roll < ERROR_RATE + TIMEOUT_RATE:
            kind, answer = "timeout", Answer(200, delay_s=HANG_S)
        else:
            kind, answer = "ok", Answer(draw.choice((200, 202, 204)))
        self.hits[webhook_id].append(Hit(webhook_id, nth, kind, answer.status, time.monotonic()))
        return answer


@pytest.fixture
async def receiver() -> AsyncIterator[FlakyReceiver]:
    async with FlakyReceiver(SEED) as server:
        yield server


def push_event(index: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=SEED * 1000 + index)),
        "timestamp": "2026-11-22T21:42:06Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 396,
            "digest": "sha256:" + f"{index:064x}",
            "length": 396,
            "repository": "team/app",
            "tag": f"t{index:04d}",
        },
        "request": {"id": str(uuid.uuid4()), "addr": "127.0.0.1:1", "host": "127.0.0.1:5000", "method": "PUT"},
        "actor": {},
        "source": {"addr": "vm:5000", "instanceID": "flaky-receiver"},
    }


async def post_events(base_url: str, events: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": DISTRIBUTION_TYPE}
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(events), ENVELOPE):
            envelope = {"events": events[start : start + ENVELOPE]}
            async with http.post(f"{base_url}/events/distribution", json=envelope, headers=headers) as response:
                assert response.status == 202, await response.text()


async def test_flaky_receiver_every_delivery_ends_delivered_or_dead_lettered(
    kafka: KafkaBroker, postgres_url: str, topic_prefix: str, receiver: FlakyReceiver, fault_report: ScenarioCounts
) -> None:
    fault_report.scenario = "2. receiver 30 % 5xx + 10 % timeouts"
    triggers = {
        "allowed_networks": ["127.0.0.0/8"],
        "total_timeout_s": TOTAL_TIMEOUT_S,
        "retry_schedule_s": list(GLOBAL_SCHEDULE),
        "concurrency_per_target": 32,
        # The default threshold opens the target's breaker again and again; a short cooldown keeps
        # its deferrals (which are not attempts) within the test's time.
        "breaker_failures": 5,
        "breaker_cooldown_s": 1.0,
    }
    regions = {"region-a": {"registry": "http://127.0.0.1:5000"}}  # names the images in payloads; never called
    settings = service_settings(postgres_url, kafka.bootstrap, topic_prefix, triggers=triggers, regions=regions)
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    events = [push_event(index) for index in range(EVENTS)]
    fault_report.sent = EVENTS

    async def deliveries() -> list[Delivery]:
        async with sessions() as session:
            return list((await session.scalars(select(Delivery).order_by(Delivery.id))).all())

    async def all_final() -> list[Delivery] | None:
        rows = await deliveries()
        done = len(rows) >= EVENTS and all(row.status in store.FINAL_STATES for row in rows)
        return rows if done else None

    try:
        async with running_service(settings) as service:
            body = {
                "name": "flaky",
                "targets": [{"type": "http", "address": f"{receiver.url}/hook"}],
                "event_types": ["PUSH_ARTIFACT"],
                "retry_schedule": list(POLICY_SCHEDULE),
                "enabled": True,
            }
            status, answer = await signed(service.url, "POST", POLICIES, body)
            assert status == 201, answer
            await post_events(service.url, events)
            try:
                rows = await wait_for(all_final, limit_s=75.0, interval=0.5)
            except TimeoutError:
                rows = await deliveries()
                stuck = [(r.id, r.status, r.attempts, r.detail) for r in rows if r.status not in store.FINAL_STATES]
                fault_report.lost = EVENTS - sum(r.status in store.FINAL_STATES for r in rows)
                raise AssertionError(f"{len(rows)} deliveries, not final: {stuck[:10]}") from None
    finally:
        await engine.dispose()

    check_outcomes(rows, receiver, events, fault_report)


def check_outcomes(
    rows: list[Delivery], receiver: FlakyReceiver, events: list[dict[str, Any]], report: ScenarioCounts
) -> None:
    by_event: dict[str, list[Delivery]] = defaultdict(list)
    for row in rows:
        by_event[row.event_id].append(row)
    report.duplicates = sum(len(found) - 1 for found in by_event.values())
    report.lost = sum(1 for event in events if event["id"] not in by_event)
    delivered = [r for r in rows if r.status == store.SUCCEEDED]
    dead = [r for r in rows if r.status == store.FAILED]
    report.applied, report.dead_lettered = len(delivered), len(dead)
    assert report.duplicates == 0 and report.lost == 0, "one delivery per event"
    assert len(delivered) + len(dead) == len(rows) == EVENTS, {r.status for r in rows}

    known = {f"msg_{row.id}": row for row in rows}
    assert set(receiver.hits) <= set(known), "the receiver saw a webhook-id no delivery has"
    in_time_twice = 0
    repeats_after_timeout = 0
    for webhook_id, row in known.items():
        hits = receiver.hits.get(webhook_id, [])
        assert len(hits) == row.attempts, (webhook_id, row.attempts, [h.kind for h in hits])
        assert 1 <= row.attempts <= len(POLICY_SCHEDULE), (webhook_id, row.attempts, row.detail)
        check_spacing(hits)
        kinds = [hit.kind for hit in hits]
        in_time_twice += max(0, kinds.count("ok") - 1)
        repeats_after_timeout += sum(1 for before in kinds[:-1] if before == "timeout")
        if row.status == store.SUCCEEDED:
            assert kinds[-1] == "ok" and "ok" not in kinds[:-1], (webhook_id, kinds)
            assert row.last_status_code == hits[-1].status, (webhook_id, row.last_status_code, hits[-1])
        else:
            assert "ok" not in kinds and row.attempts == len(POLICY_SCHEDULE), (webhook_id, kinds, row.detail)
            assert f"gave up after {len(POLICY_SCHEDULE)} attempts" in row.detail, row.detail
    assert in_time_twice == 0, "a webhook-id answered 2xx in time was sent again"
    every = [hit for hits in receiver.hits.values() for hit in hits]
    counted = {kind: sum(1 for hit in every if hit.kind == kind) for kind in ("ok", "error", "timeout")}
    # The seeded draws produce all three outcomes and some deliveries that exhaust the schedule.
    assert counted["error"] and counted["timeout"] and dead and delivered, counted
    report.note = (
        f"{len(every)} requests: {counted['ok']} 2xx, {counted['error']} 5xx, {counted['timeout']} timeouts; "
        f"{repeats_after_timeout} webhook-id repeats after a timeout (retries of one delivery); "
        f"schedule {list(POLICY_SCHEDULE)} s, spacing checked"
    )


def check_spacing(hits: list[Hit]) -> None:
    """Attempt n+1 comes no sooner than the schedule's delay n (less jitter) after attempt n."""
    for before, after in itertools.pairwise(hits):
        delay = POLICY_SCHEDULE[before.nth + 1]
        floor = delay * (1 - JITTER_FRACTION) - ARRIVAL_SLACK_S
        assert after.at - before.at >= floor, (before.webhook_id, before.nth, after.at - before.at, floor)
