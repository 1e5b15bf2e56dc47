"""Smoke tests for the real-service helpers in ``tests/support`` (Postgres, tansu, Distribution).

Run with ``CAPTURE_DISTRIBUTION_EXAMPLES=1`` to (re)write the notification envelopes captured from
the live registry into ``schemas/examples/distribution/``; without it the captured envelopes are
only compared, key by key, with the committed examples.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support import oci
from tests.support.services import DistributionRegistry, KafkaBroker, PostgresServer, free_port
from workers.runtime.bundled_broker import BrokerStartError, BundledBroker

EVENTS_CONTENT_TYPE = "application/vnd.docker.distribution.events.v1+json"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "schemas" / "examples" / "distribution"
CAPTURE = os.environ.get("CAPTURE_DISTRIBUTION_EXAMPLES") == "1"

Envelope = dict[str, Any]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536


async def test_postgres_accepts_connections_and_survives_restart(postgres: PostgresServer) -> None:
    url = postgres.create_database("smoke")
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/smoke"
    conn = await asyncpg.connect(postgres.dsn("smoke"))
    try:
        assert await conn.fetchval("SELECT current_database()") == "smoke"
        await conn.execute("CREATE TABLE kept (id int)")
        await conn.execute("INSERT INTO kept VALUES (7)")
    finally:
        await conn.close()

    postgres.restart()
    conn = await asyncpg.connect(postgres.dsn("smoke"))
    try:
        assert await conn.fetchval("SELECT id FROM kept") == 7
    finally:
        await conn.close()


def test_postgres_stop_is_idempotent_and_cleanup_removes_dir() -> None:
    pg = PostgresServer()
    pg.start()
    base = pg.socket_dir
    pg.stop()
    pg.stop()
    pg.cleanup()
    assert not base.exists()


async def test_kafka_round_trip_through_a_consumer_group(kafka: KafkaBroker) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k", headers=[("h", b"v")])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"group-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=10)
        assert (record.key, record.value, record.headers) == (b"k", b"hello", (("h", b"v"),))
    finally:
        await consumer.stop()


def test_kafka_broker_stops_by_pid_and_restarts_on_the_same_port() -> None:
    with KafkaBroker() as broker:
        first_pid, port = broker.pid, broker.port
        broker.restart()
        assert broker.pid not in (None, first_pid)
        assert broker.bootstrap == f"127.0.0.1:{port}"
    assert broker.pid is None
    broker.stop()  # idempotent


def test_bundled_broker_refuses_a_port_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(BrokerStartError, match="already in use"):
            BundledBroker(port=sock.getsockname()[1]).start()


@pytest.mark.parametrize("auth", [None, ("alice", "s3cret")], ids=["anonymous", "htpasswd"])
async def test_registry_push_read_and_delete(auth: tuple[str, str] | None) -> None:
    with DistributionRegistry(auth=auth) as registry:
        assert registry.credentials == auth
        if auth is not None:
            async with aiohttp.ClientSession() as http, http.get(f"{registry.url}/v2/") as resp:
                assert resp.status == 401

        image = await oci.push_image(registry.url, "team/app", "1.0", layers=[300, 5000], auth=auth, chunk_size=2048)
        docker = await oci.push_image(registry.url, "team/app", "docker", media_type="docker", auth=auth)
        index = await oci.push_index(registry.url, "team/app", "multi", auth=auth)

        assert await oci.get_manifest_digest(registry.url, "team/app", "1.0", auth) == image.digest
        assert await oci.get_manifest_digest(registry.url, "team/app", "docker", auth) == docker.digest
        assert await oci.get_manifest_digest(registry.url, "team/app", "multi", auth) == index.digest
        for child in index.children:
            assert await oci.get_manifest_digest(registry.url, "team/app", child.digest, auth) == child.digest
        fetched = await oci.get_manifest(registry.url, "team/app", "multi", auth=auth)
        assert fetched is not None and fetched[1] == oci.OCI.index
        assert sorted(await oci.list_tags(registry.url, "team/app", auth)) == ["1.0", "docker", "multi"]

        assert await oci.delete_manifest(registry.url, "team/app", image.digest, auth)
        assert await oci.get_manifest_digest(registry.url, "team/app", "1.0", auth) is None
        assert not await oci.delete_manifest(registry.url, "team/app", image.digest, auth)


class Receiver:
    """Collects notification POSTs from the registry."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Envelope]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), json.loads(await request.read())))
        return web.Response(status=200)

    def events(self) -> list[dict[str, Any]]:
        return [event for _, envelope in self.requests for event in envelope["events"]]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], within: float = 5.0) -> Envelope:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for _, envelope in self.requests:
                if any(predicate(event) for event in envelope["events"]):
                    return envelope
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event in {json.dumps(self.events(), indent=1)[:3000]}")


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{prefix}.{k}"} | _key_paths(v, f"{prefix}.{k}")}
    if isinstance(value, list):
        return {p for item in value for p in _key_paths(item, f"{prefix}[]")}
    return set()


def _check_example(name: str, envelope: Envelope) -> None:
    path = EXAMPLES_DIR / f"{name}.json"
    if CAPTURE:
        EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(envelope, indent=2) + "\n")
    elif path.exists():
        assert _key_paths(envelope) == _key_paths(json.loads(path.read_text())), f"{name} shape changed"


def _is(action: str, media_type: str | None = None, tag: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        target = event["target"]
        return bool(
            event["action"] == action
            and (media_type is None or target.get("mediaType") == media_type)
            and target.get("tag") == tag
        )

    return match


async def test_registry_notifications_reach_a_receiver() -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    auth = ("ci-bot", "s3cret")
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/events"))
        with DistributionRegistry(auth=auth, notification_url=url, notification_token="hook-token") as registry:
            image = await oci.push_image(registry.url, "team/app", "1.0.0", layers=[512], auth=auth)
            push_manifest = await receiver.wait_for(_is("push", oci.OCI.manifest, "1.0.0"))
            push_blob = await receiver.wait_for(_is("push", "application/octet-stream"))
            assert await oci.get_manifest_digest(registry.url, "team/app", "1.0.0", auth) == image.digest
            pull = await receiver.wait_for(_is("pull", oci.OCI.manifest, "1.0.0"))
            index = await oci.push_index(registry.url, "team/app", "2.0.0", auth=auth)
            push_index = await receiver.wait_for(_is("push", oci.OCI.index, "2.0.0"))
            assert await oci.delete_manifest(registry.url, "team/app", image.digest, auth)
            delete = await receiver.wait_for(_is("delete"))
            delete_tag = await receiver.wait_for(_is("delete", tag="1.0.0"))

    headers, _ = receiver.requests[0]
    assert headers["Content-Type"] == EVENTS_CONTENT_TYPE
    assert headers["Authorization"] == "Bearer hook-token"
    event = push_manifest["events"][0]
    assert event["target"]["digest"] == image.digest
    assert event["target"]["repository"] == "team/app"
    assert event["actor"] == {"name": "ci-bot"}
    assert event["request"]["method"] == "PUT"
    assert pull["events"][0]["request"]["method"] == "HEAD"
    assert push_index["events"][0]["target"]["digest"] == index.digest
    child_pushes = [e for e in receiver.events() if e["target"].get("digest") in {c.digest for c in index.children}]
    assert {e["target"].get("tag") for e in child_pushes} == {None}
    assert delete["events"][0]["target"] == {"digest": image.digest, "repository": "team/app"}
    assert delete_tag["events"][0]["target"] == {"tag": "1.0.0", "repository": "team/app"}

    for name, envelope in [
        ("push-manifest", push_manifest),
        ("push-blob", push_blob),
        ("pull-manifest", pull),
        ("push-index", push_index),
        ("delete-manifest", delete),
        ("delete-tag", delete_tag),
    ]:
        _check_example(name, envelope)


async def test_registry_notifications_can_include_references() -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("/events"))
        with DistributionRegistry(notification_url=url, include_references=True) as registry:
            index = await oci.push_index(registry.url, "team/app", "2.0.0")
            push_index = await receiver.wait_for(_is("push", oci.OCI.index, "2.0.0"))
            image = index.children[0]
            child = await receiver.wait_for(lambda e: e["target"].get("digest") == image.digest)

    references = push_index["events"][0]["target"]["references"]
    assert [r["digest"] for r in references] == [c.digest for c in index.children]
    assert [r["digest"] for r in child["events"][0]["target"]["references"]] == [
        image.config_digest,
        *image.layer_digests,
    ]
    assert push_index["events"][0]["actor"] == {}
    _check_example("push-index-with-references", push_index)
