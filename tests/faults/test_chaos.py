"""Scenario 1: steady pushes while workers are SIGKILLed, scaled 1 → 3 → 1 and Postgres is down for 30 s.

Every pushed tag must end in a terminal state — its webhook delivered (or dead-lettered with a
reason) and its inventory row written — with nothing lost and nothing done twice: one delivery row
per event (the unique key), one ``webhook-id`` per event at the receiver (a re-POST of the same
``webhook-id`` after a kill is the documented at-least-once retry, which receivers deduplicate).

``RW_FAULTS_EVENTS`` and ``RW_FAULTS_SECONDS`` scale the run (default 20,000 events over 100 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.faults.conftest import ScenarioCounts
from tests.support.fleet import Fleet, ServiceProcess, clean_env, wait_http
from tests.support.receiver import WebhookReceiver
from tests.support.service import ADMIN_AK, ADMIN_SK, DISTRIBUTION_TYPE, INGRESS_TOKEN, SECRET_KEY
from tests.support.services import KafkaBroker, PostgresServer
from tests.support.swr_http import signed
from workers.db.engine import create_engine
from workers.db.migrate import upgrade_to_head

EVENTS = int(os.environ.get("RW_FAULTS_EVENTS", "20000"))
SECONDS = float(os.environ.get("RW_FAULTS_SECONDS", "100"))
PER_ENVELOPE = 4
REPOSITORIES = 50
OUTAGE_S = 30.0
SETTLE_LIMIT_S = 300.0
KINDS = "inventory,triggers"
POLICIES = "/v2/default/instances/local/namespaces/team/webhook/policies"

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Step:
    """One disruption at a fraction of the sending window."""

    at: float
    action: str  # kill | scale-up | scale-down | db-stop | db-start


# 10 kills, 1 → 3 → 1, and the 30 s outage in the middle (two kills land during it).
PLAN = (
    Step(0.04, "kill"),
    Step(0.10, "kill"),
    Step(0.16, "scale-up"),
    Step(0.22, "kill"),
    Step(0.28, "kill"),
    Step(0.34, "db-stop"),
    Step(0.42, "kill"),
    Step(0.52, "kill"),
    Step(0.70, "kill"),
    Step(0.76, "scale-down"),
    Step(0.82, "kill"),
    Step(0.90, "kill"),
    Step(0.96, "kill"),
)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of its own: this scenario stops it for 30 s."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as server:
        yield server


def envelope(first: int) -> dict[str, Any]:
    events = []
    for i in range(first, min(first + PER_ENVELOPE, EVENTS)):
        events.append(
            {
                "id": f"chaos-{i}",
                "timestamp": "2026-11-23T10:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 1000,
                    "digest": f"sha256:{i:064x}",
                    "repository": f"team/app{i % REPOSITORIES}",
                    "tag": f"t{i}",
                },
                "actor": {"name": "ci"},
            }
        )
    return {"events": events}


async def send_all(ingress: str) -> int:
    """Envelopes at a steady pace; 503 or a refused connection is retried, as a registry does."""
    headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": DISTRIBUTION_TYPE}
    starts = range(0, EVENTS, PER_ENVELOPE)
    interval = SECONDS / len(starts)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    posts = 0
    async with aiohttp.ClientSession() as http:
        for n, first in enumerate(starts):
            await asyncio.sleep(max(0.0, begin + n * interval - loop.time()))
            body = json.dumps(envelope(first))
            while True:
                posts += 1
                try:
                    async with http.post(f"{ingress}/events/distribution", data=body, headers=headers) as response:
                        if response.status == 202:
                            break
                        assert response.status == 503, await response.text()
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
    return posts


class Chaos:
    def __init__(self, fleet: Fleet, postgres: PostgresServer) -> None:
        self.fleet = fleet
        self.postgres = postgres
        self.random = random.Random(7)
        self.unclean_exits: list[int] = []

    def workers(self) -> list[ServiceProcess]:
        return self.fleet.running("worker")

    def start_worker(self) -> None:
        self.fleet.start("worker", "--kinds", KINDS)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for step in PLAN:
            await asyncio.sleep(max(0.0, begin + step.at * SECONDS - loop.time()))
            await self.apply(step.action)
            if step.action == "db-stop":
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(self.postgres.start)

    async def apply(self, action: str) -> None:
        if action == "kill":
            self.fleet.kill(self.random.choice(self.workers()))
            self.start_worker()  # the orchestrator replaces it
        elif action == "scale-up":
            while len(self.workers()) < 3:
                self.start_worker()
        elif action == "scale-down":
            for victim in self.workers()[1:]:
                await asyncio.to_thread(wait_http, f"{victim.url}/readyz", 60.0)  # SIGTERM a started worker
                code = await asyncio.to_thread(self.fleet.terminate, victim)
                if code != 0:
                    self.unclean_exits.append(code)
        elif action == "db-stop":
            await asyncio.to_thread(self.postgres.stop, "fast")


async def database_state(dsn: str) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        statuses = dict(await connection.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
        return {
            "statuses": {str(k): int(v) for k, v in statuses.items()},
            "deliveries": sum(statuses.values()),
            "distinct_events": int(await connection.fetchval("SELECT count(DISTINCT event_id) FROM deliveries")),
            "history": int(await connection.fetchval("SELECT count(*) FROM image_events")),
            "tags": int(
                await connection.fetchval("SELECT count(*) FROM artifacts WHERE kind = 'tag' AND deleted_at IS NULL")
            ),
            "failed_detail": [
                str(r[0]) for r in await connection.fetch("SELECT detail FROM deliveries WHERE status = 'failed'")
            ],
        }
    finally:
        await connection.close()


async def database_state_or_outage(dsn: str) -> dict[str, Any]:
    try:
        return await database_state(dsn)
    except OSError as exc:
        return {"statuses": {}, "tags": 0, "unreachable": repr(exc)}


def receiver_tally(receiver: WebhookReceiver) -> tuple[dict[str, str], int]:
    """webhook-id → the tag it announced, and how many POSTs repeated a webhook-id already seen."""
    tags: dict[str, str] = {}
    repeats = 0
    for request in receiver.received:
        webhook_id = request.headers["webhook-id"]
        tag = json.loads(request.body)["event_data"]["resources"][0]["tag"]
        if webhook_id in tags:
            repeats += 1
            assert tags[webhook_id] == tag, f"{webhook_id} announced two different events"
        tags[webhook_id] = tag
    return tags, repeats


async def test_kills_scaling_and_a_database_outage_lose_and_double_nothing(
    own_postgres: PostgresServer,
    kafka: KafkaBroker,
    topic_prefix: str,
    receiver: WebhookReceiver,
    tmp_path: Path,
    fault_report: ScenarioCounts,
) -> None:
    url = own_postgres.create_database("chaos")
    engine = create_engine(url)
    await upgrade_to_head(engine)
    await engine.dispose()
    env = clean_env(
        RW_DATABASE_URL=url, RW_KAFKA_BOOTSTRAP=kafka.bootstrap, RW_KAFKA_IDEMPOTENCE="false",
        RW_KAFKA_TOPIC_PREFIX=topic_prefix, RW_KAFKA_PARTITIONS="6", RW_KAFKA_SESSION_TIMEOUT_MS="3000",
        RW_KAFKA_HEARTBEAT_INTERVAL_MS="500", RW_WORKER_DRAIN_TIMEOUT_S="10", RW_INGRESS_TOKEN=INGRESS_TOKEN,
        RW_ADMIN_ACCESS_KEY=ADMIN_AK, RW_ADMIN_SECRET_KEY=ADMIN_SK, RW_SECRET_KEYS=SECRET_KEY,
        RW_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8", RW_LOG_LEVEL="WARNING",
    )  # fmt: skip
    fleet = Fleet(env, tmp_path / "fleet.log")
    fault_report.scenario = "1. kills x10, scale 1→3→1, Postgres down 30 s"
    try:
        api = fleet.start("api")
        await asyncio.to_thread(wait_http, f"{api.url}/readyz")
        status, answer = await signed(api.url, "POST", POLICIES, policy_body(f"{receiver.url}/hook"))
        assert status == 201, answer
        fleet.start("worker", "--kinds", KINDS)
        chaos = Chaos(fleet, own_postgres)
        posts, _ = await asyncio.gather(send_all(api.url), chaos.run())
        assert fleet.kills == 10 and not chaos.unclean_exits, (fleet.kills, chaos.unclean_exits)

        dsn = own_postgres.dsn("chaos")
        deadline = time.monotonic() + SETTLE_LIMIT_S
        while True:
            state = await database_state_or_outage(dsn)
            terminal = state["statuses"].get("succeeded", 0) + state["statuses"].get("failed", 0)
            if terminal >= EVENTS and state["tags"] >= EVENTS:
                break
            assert time.monotonic() < deadline, (
                f"not settled: {state}\n{fleet.log_tail()}\npostgres: {own_postgres.log_path.read_text()[-3000:]}"
            )
            await asyncio.sleep(1.0)
        await asyncio.sleep(3.0)  # a redelivered batch landing now must change nothing
        state = await database_state(dsn)
        tags, repeats = receiver_tally(receiver)
    finally:
        fleet.close()

    announced = Counter(tags.values())
    succeeded = state["statuses"].get("succeeded", 0)
    terminal = succeeded + state["statuses"].get("failed", 0)
    fault_report.sent = EVENTS
    fault_report.applied = succeeded
    fault_report.dead_lettered = state["statuses"].get("failed", 0)
    fault_report.duplicates = (state["deliveries"] - state["distinct_events"]) + sum(
        n - 1 for n in announced.values() if n > 1
    )
    fault_report.lost = max(0, EVENTS - terminal) + max(0, EVENTS - state["tags"]) + max(0, succeeded - len(announced))
    fault_report.note = f"{posts:,} POSTs; {repeats} same-webhook-id re-POSTs after kills"

    assert state["deliveries"] == state["distinct_events"] == EVENTS, state
    assert state["history"] == EVENTS and state["tags"] == EVENTS, state
    assert all(state["failed_detail"]), "a dead-lettered delivery carries its reason"
    assert len(announced) == succeeded, "every delivered event reached the receiver under one webhook-id"
    assert fault_report.duplicates == 0 and fault_report.lost == 0, fault_report


def policy_body(address: str) -> dict[str, Any]:
    return {
        "name": "chaos",
        "description": "fault-injection scenario 1",
        "targets": [{"type": "http", "address": address, "auth_header": "", "skip_cert_verify": False}],
        "event_types": ["PUSH_ARTIFACT"],
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
