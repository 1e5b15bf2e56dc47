"""Fault scenario 5: bad input at the ingress and the API gets a clear 4xx, no crash, no effect.

Every case of ``corpus.py`` is sent to the real service (Postgres, the bundled broker); each
must answer its documented status with ``{"error_code", "error_msg"}`` naming the problem,
leave ``/readyz`` at 200, and change nothing: the row count of every table and the end offset
of every topic are compared before and after it. Valid requests are interleaved (pushes at the
ingress, triggers and a webhook policy whose regular expressions are pathological for
backtracking engines and harmless for RE2) to prove the service still works, and at the end
tags built to make such expressions backtrack are pushed through them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.faults.conftest import ScenarioCounts
from tests.faults.corpus import (
    POLICIES,
    REGISTRIES,
    TRIGGERS,
    BadRequest,
    bases,
    corpus,
    harbor_push,
    policy_body,
    push_envelope,
    trigger_body,
)
from tests.faults.effects import BrokerProbe, differences, groups_of, row_counts
from tests.support.receiver import WebhookReceiver
from tests.support.service import (
    ADMIN_AK,
    ADMIN_SK,
    DISTRIBUTION_TYPE,
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
)
from tests.support.services import KafkaBroker
from tests.support.swr_http import signed
from workers.runtime.kafka import Topics

NEVER = "0 0 1 1 *"  # schedules that would otherwise produce commands while the corpus runs
PATHOLOGICAL = ("(a+)+$", "(a|aa)*b", "(x+x+)+y", "^(([a-z])+.)+[A-Z]([a-z])+$")
# Pushed last; a backtracking engine takes exponential time on them. Only the first matches.
BACKTRACKING_TAGS = ("a" * 100, "x" * 100 + "z", "abcdefghijklmnopqrstuvwxyz" * 4 + "0")
FIRES = {"(a+)+$": {"a" * 100}}
TIMEOUT = aiohttp.ClientTimeout(total=15.0)  # an answer later than this is a hang
VALID_EVERY = 8


@pytest.fixture
async def service(kafka: KafkaBroker, postgres_url: str, topic_prefix: str) -> AsyncIterator[RunningService]:
    settings = service_settings(
        postgres_url,
        kafka.bootstrap,
        topic_prefix,
        regions={
            "region-a": {"registry": "http://127.0.0.1:9", "insecure": True},
            "region-b": {"registry": "http://127.0.0.1:10", "insecure": True},
        },
        triggers={"allowed_networks": ["127.0.0.0/8"], "retry_schedule_s": [0]},
        replication={"reconcile_cron": NEVER},
        retention={"cron": NEVER},
        sweep_cron=NEVER,
    )
    async with running_service(settings) as running:
        yield running


def aksk_headers(base_url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Signed as the official SDK signs (``tests/support/swr_http.py``), for any body and type."""
    parts = urlsplit(base_url)
    path_only, _, query = path.partition("?")
    request = SdkRequest(
        method=method,
        schema=parts.scheme,
        host=parts.netloc,
        resource_path=path_only,
        query_params=[tuple(p.split("=", 1)) for p in query.split("&") if p],
        header_params={**headers, "X-Project-Id": "default"},
        body=body,
    )
    Signer(BasicCredentials(ADMIN_AK, ADMIN_SK)).sign(request)
    return {k: str(v) for k, v in request.header_params.items()}


async def in_chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


async def send(http: aiohttp.ClientSession, base_url: str, case: BadRequest) -> tuple[int, Any]:
    """(status, decoded JSON or raw text); status 0 when the service did not answer in time."""
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.surface == "ingress":
        headers["Authorization"] = f"Bearer {INGRESS_TOKEN}"
    elif case.surface == "api":
        headers = aksk_headers(base_url, case.method, case.path, case.body, headers)
    data: Any = in_chunks(case.body) if case.chunked else (case.body or None)
    try:
        async with http.request(
            case.method, f"{base_url}{case.path}", data=data, headers=headers, timeout=TIMEOUT
        ) as response:
            raw = await response.text()
            status = response.status
    except TimeoutError:
        return 0, "no answer (hang)"
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def judge(case: BadRequest, status: int, answer: Any) -> list[str]:
    """What is wrong with the answer to ``case``; empty when it is a clear, expected refusal."""
    problems = []
    if status != case.status:
        problems.append(f"status {status}, expected {case.status}")
    if not isinstance(answer, dict) or set(answer) != {"error_code", "error_msg"}:
        return [*problems, f"body is not {{error_code, error_msg}}: {str(answer)[:200]!r}"]
    if not isinstance(answer["error_code"], str) or not answer["error_code"]:
        problems.append(f"empty error_code: {answer!r}")
    message = answer["error_msg"]
    if not isinstance(message, str) or case.needle not in message:
        problems.append(f"error_msg {str(message)[:200]!r} does not name {case.needle!r}")
    return problems


class ValidRequests:
    """Requests that must succeed between the bad ones; each waits for its effects to settle."""

    def __init__(self, service: RunningService, probe: BrokerProbe, receiver: WebhookReceiver, prefix: str):
        self._service = service
        self._probe = probe
        self._receiver = receiver
        self._groups = groups_of(prefix)
        self._topic = Topics.from_prefix(prefix).image_events
        self._turn = 0
        self.pushed: list[str] = []  # tags
        self.conditions: set[str] = set()  # of the triggers created
        self.api_calls = 0

    async def next(self, http: aiohttp.ClientSession) -> None:
        kinds = (self.push, self.harbor_push, self.pathological_trigger, self.listing)
        await kinds[self._turn % len(kinds)](http, self._turn)
        self._turn += 1

    async def push(self, http: aiohttp.ClientSession, n: int, tag: str = "", repository: str = "team/app") -> None:
        envelope = push_envelope()
        event = envelope["events"][0]
        event["id"], event["target"]["tag"] = f"valid-{n}-{tag}", tag or f"ok{n}"
        event["target"]["repository"] = repository
        event["target"]["digest"] = "sha256:" + hashlib.sha256(f"valid-{n}-{tag}".encode()).hexdigest()
        await self._ingest(http, "/events/distribution", envelope, DISTRIBUTION_TYPE)
        self.pushed.append(event["target"]["tag"])

    async def harbor_push(self, http: aiohttp.ClientSession, n: int) -> None:
        payload = harbor_push()
        payload["occur_at"] += n
        payload["event_data"]["resources"][0]["tag"] = f"harbor{n}"
        await self._ingest(http, "/events/harbor", payload, "application/json")
        self.pushed.append(f"harbor{n}")

    async def _ingest(self, http: aiohttp.ClientSession, path: str, document: Any, content_type: str) -> None:
        headers = {"Authorization": f"Bearer {INGRESS_TOKEN}", "Content-Type": content_type}
        async with http.post(f"{self._service.url}{path}", json=document, headers=headers) as response:
            assert response.status == 202, await response.text()
        await self._probe.wait_consumed(self._topic, self._groups)

    async def pathological_trigger(self, _http: aiohttp.ClientSession, n: int) -> None:
        condition = PATHOLOGICAL[(n // 4) % len(PATHOLOGICAL)]
        body = {**trigger_body(), "name": f"patho-{n}", "trigger_type": "regular", "condition": condition}
        status, answer = await signed(self._service.url, "POST", TRIGGERS, body)
        assert status == 201, (condition, answer)
        self.conditions.add(condition)
        self.api_calls += 1

    async def listing(self, _http: aiohttp.ClientSession, _n: int) -> None:
        status, answer = await signed(self._service.url, "GET", "/v2/manage/repos")
        assert status == 200, answer
        self.api_calls += 1

    async def registries(self) -> None:
        status, answer = await signed(self._service.url, "GET", REGISTRIES)
        assert status == 200, answer
        assert {r["name"]: r["id"] for r in answer["registries"]} == {"region-a": 1, "region-b": 2}, answer
        self.api_calls += 1

    async def pathological_policy(self) -> int:
        body = {**policy_body(f"{self._receiver.url}/hook"), "name": "pathological"}
        body["scope_rules"] = [{"tag_selectors": [{"kind": "regexp", "decoration": "matches", "pattern": "(a+)+$"}]}]
        status, answer = await signed(self._service.url, "POST", POLICIES, body)
        assert status == 201, answer
        self.api_calls += 1
        return int(answer["id"])


async def ready(http: aiohttp.ClientSession, service: RunningService) -> bool:
    if service.task.done():
        return False
    async with http.get(f"{service.url}/readyz") as response:
        return response.status == 200


async def test_bad_input_gets_clear_4xx_and_has_no_effect(
    service: RunningService, engine: AsyncEngine, topic_prefix: str, fault_report: ScenarioCounts
) -> None:
    fault_report.scenario = "5. bad-input corpus (ingress + API)"
    cases = corpus()
    topic_names = Topics.from_prefix(topic_prefix)
    topics = topic_names.all()
    failures: list[str] = []
    effects = 0
    statuses: Counter[int] = Counter()
    async with (
        aiohttp.ClientSession() as http,
        BrokerProbe(service.settings.kafka.bootstrap) as probe,
        WebhookReceiver() as receiver,
    ):
        valid = ValidRequests(service, probe, receiver, topic_prefix)
        policy_id = await valid.pathological_policy()
        await valid.registries()  # numbers the regions as the corpus's replication bodies use them
        for index, case in enumerate(cases):
            if index % VALID_EVERY == 0:
                await valid.next(http)
            rows_before, offsets_before = await row_counts(engine), await probe.end_offsets(topics)
            status, answer = await send(http, service.url, case)
            statuses[status] += 1
            problems = judge(case, status, answer)
            changed = differences(rows_before, await row_counts(engine))
            moved = differences(offsets_before, await probe.end_offsets(topics))
            if moved:  # let what it produced take effect now, so that it is blamed on this case
                await probe.wait_consumed(topic_names.image_events, groups_of(topic_prefix))
                changed.update(differences(rows_before, await row_counts(engine)))
            if changed or moved:
                effects += 1
                problems.append(f"effect: rows {changed} offsets {moved}")
            if not await ready(http, service):
                problems.append("service not ready afterwards")
            failures.extend(f"{case.name}: {problem}" for problem in problems)

        for n, tag in enumerate(BACKTRACKING_TAGS, start=1000):
            await valid.push(http, n, tag)
        await check_valid_effects(engine, receiver, valid, policy_id, failures)
        for base in bases():  # last: these have effects, some of them asynchronous
            status, answer = await send(http, service.url, base)
            if status != base.status:
                failures.append(f"{base.name} (what cases mutate) is not valid: {status} {answer}")

    fault_report.sent = len(cases)
    fault_report.applied = effects
    fault_report.note = (
        ("all 4xx: " if all(400 <= s < 500 for s in statuses) else "NOT all 4xx: ")
        + ", ".join(f"{count}x{status}" for status, count in sorted(statuses.items()))
        + f"; {len(valid.pushed)} valid pushes and {valid.api_calls} valid API calls interleaved"
    )
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures)


async def check_valid_effects(
    engine: AsyncEngine, receiver: WebhookReceiver, valid: ValidRequests, policy_id: int, failures: list[str]
) -> None:
    """Every valid push is in the inventory; the pathological rules matched what they should."""
    async with engine.connect() as connection:
        tags = set((await connection.execute(text("SELECT tag FROM artifacts WHERE kind = 'tag'"))).scalars())
        fired = (
            await connection.execute(
                text("SELECT t.condition, d.tag FROM deliveries d JOIN deployment_triggers t ON t.id = d.trigger_id")
            )
        ).all()
    missing = set(valid.pushed) - tags
    if missing or len(tags) != len(set(valid.pushed)):
        failures.append(f"inventory: valid pushes missing {sorted(missing)[:5]}, tags {len(tags)}")
    if valid.conditions != set(PATHOLOGICAL):
        failures.append(f"pathological triggers created: {sorted(valid.conditions)}; the corpus is too short")
    for condition in PATHOLOGICAL:
        fired_tags = {tag for cond, tag in fired if cond == condition}
        expected = FIRES.get(condition, set())
        if fired_tags != expected:
            failures.append(
                f"trigger {condition!r} fired for {sorted(fired_tags)[:3]}, expected {sorted(expected)[:3]}"
            )
    try:
        (delivered,) = await receiver.wait_for(1, timeout_s=10)
        tag = json.loads(delivered.body)["event_data"]["resources"][0]["tag"]
        if tag != "a" * 100:
            failures.append(f"webhook policy {policy_id} fired for {tag!r}")
    except (TimeoutError, ValueError) as exc:
        failures.append(f"webhook policy {policy_id}: {exc!r}, received {len(receiver.received)}")
