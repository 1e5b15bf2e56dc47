"""The ingress over HTTP against a real broker: every bad-input case and the happy paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from tests.support.service import (
    DISTRIBUTION_TYPE,
    INGRESS_TOKEN,
    RunningService,
    running_service,
    service_settings,
    wait_for,
)
from tests.support.services import KafkaBroker
from workers.db.engine import create_engine, session_factory
from workers.db.models import Artifact

EXAMPLES = Path(__file__).parent.parent / "schemas" / "examples"
AUTH = {"Authorization": f"Bearer {INGRESS_TOKEN}"}


@pytest.fixture
async def service(kafka: KafkaBroker, sqlite_url: str, topic_prefix: str) -> AsyncIterator[RunningService]:
    settings = service_settings(sqlite_url, kafka.bootstrap, topic_prefix, ingress_max_body=4096)
    async with running_service(settings) as running:
        yield running


def example(name: str) -> Any:
    return json.loads((EXAMPLES / "distribution" / f"{name}.json").read_text())


async def post(service: RunningService, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"{service.url}{path}", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_real_distribution_envelope_is_accepted_and_recorded(service: RunningService) -> None:
    body = json.dumps(example("push-manifest")).encode()
    status, answer, _ = await post(service, "/events/distribution", body, {**AUTH, "Content-Type": DISTRIBUTION_TYPE})
    assert status == 202 and answer["accepted"] == 1
    engine = create_engine(service.settings.database_url)
    try:

        async def recorded() -> list[Any]:
            async with session_factory(engine)() as session:
                return list((await session.execute(select(Artifact.tag).where(Artifact.kind == "tag"))).scalars())

        tags = await wait_for(recorded)
        assert tags == [example("push-manifest")["events"][0]["target"]["tag"]]
    finally:
        await engine.dispose()


async def test_harbor_payloads_are_accepted(service: RunningService) -> None:
    for path in sorted((EXAMPLES / "harbor").glob("*.json")):
        headers = {**AUTH, "Content-Type": "application/json"}
        status, answer, _ = await post(service, "/events/harbor", path.read_bytes(), headers)
        assert status == 202, (path.name, answer)


@pytest.mark.parametrize(
    ("headers", "body", "status", "needle"),
    [
        ({"Content-Type": DISTRIBUTION_TYPE}, b'{"events": []}', 401, "Authorization"),
        ({"Authorization": "Bearer nope", "Content-Type": DISTRIBUTION_TYPE}, b'{"events": []}', 401, "not valid"),
        ({"Authorization": "Basic abc", "Content-Type": DISTRIBUTION_TYPE}, b'{"events": []}', 401, "Bearer"),
        ({**AUTH, "Content-Type": "text/plain"}, b'{"events": []}', 415, "text/plain"),
        ({**AUTH, "Content-Type": DISTRIBUTION_TYPE}, b"x" * 5000, 413, "4096"),
        ({**AUTH, "Content-Type": DISTRIBUTION_TYPE}, b"{not json", 400, "not valid JSON"),
        ({**AUTH, "Content-Type": DISTRIBUTION_TYPE}, b'{"evnts": []}', 400, "events"),
        ({**AUTH, "Content-Type": DISTRIBUTION_TYPE}, b'{"events": [{"id": "x"}]}', 400, "events[0].timestamp"),
    ],
)
async def test_bad_requests_get_clear_json_errors(
    service: RunningService, headers: dict[str, str], body: bytes, status: int, needle: str
) -> None:
    got, answer, _ = await post(service, "/events/distribution", body, headers)
    assert got == status
    assert set(answer) == {"error_code", "error_msg"} and needle in answer["error_msg"]


async def test_invalid_reference_names_the_field(service: RunningService) -> None:
    envelope = example("push-manifest")
    envelope["events"][0]["target"]["repository"] = "UPPER/case"
    status, answer, _ = await post(
        service, "/events/distribution", json.dumps(envelope).encode(), {**AUTH, "Content-Type": DISTRIBUTION_TYPE}
    )
    assert status == 400 and answer["error_msg"].startswith("events[0].target.repository")


async def test_chunked_oversize_body_is_refused(service: RunningService) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{service.url}/events/distribution", data=chunks(), headers={**AUTH, "Content-Type": DISTRIBUTION_TYPE}
        ) as resp,
    ):
        assert resp.status == 413


async def test_unknown_region_is_refused(service: RunningService) -> None:
    body = json.dumps(example("push-manifest")).encode()
    status, answer, _ = await post(
        service, "/events/distribution?region=mars-1", body, {**AUTH, "Content-Type": DISTRIBUTION_TYPE}
    )
    assert status == 400 and "mars-1" in answer["error_msg"]


async def test_broker_down_answers_503_with_retry_after(sqlite_url: str, topic_prefix: str) -> None:
    with KafkaBroker() as broker:
        settings = service_settings(sqlite_url, broker.bootstrap, topic_prefix)
        async with running_service(settings) as service:
            broker.kill()
            body = json.dumps(example("push-manifest")).encode()
            status, answer, headers = await post(
                service, "/events/distribution", body, {**AUTH, "Content-Type": DISTRIBUTION_TYPE}
            )
            assert status == 503 and headers["Retry-After"].isdigit()
            assert answer["error_code"] == "RW.INGRESS.BROKER_UNAVAILABLE"
