"""The CLI as a user runs it: embedded defaults, SIGTERM, and a worker SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import requests  # type: ignore[import-untyped]

from tests.support.fleet import CLI, clean_env, wait_http
from tests.support.services import KafkaBroker, PostgresServer, free_port
from workers.config import KafkaSettings
from workers.db.engine import create_engine
from workers.db.migrate import upgrade_to_head
from workers.events.model import Action, ArtifactKind, ImageEvent, Source, encode_event
from workers.runtime.kafka import Topics, ensure_topics
from workers.runtime.producer import KafkaProducer, OutgoingMessage


@pytest.fixture
def process_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "process.log"
    yield path
    if path.exists():
        sys.stderr.write(path.read_text()[-4000:])


def test_up_with_embedded_defaults_is_ready_and_stops_cleanly_on_sigterm(tmp_path: Path, process_log: Path) -> None:
    port = free_port()
    env = clean_env(RW_DATA_DIR=str(tmp_path / "data"), RW_LISTEN=f"127.0.0.1:{port}")
    with process_log.open("w") as log:
        proc = subprocess.Popen([*CLI, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        ready = wait_http(f"http://127.0.0.1:{port}/readyz").json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "rw_ingress_events_received_total" in metrics
        assert (tmp_path / "data" / "registry-workers.db").exists()
        assert "RW_ADMIN_SECRET_KEY=" in process_log.read_text(), "generated credentials are printed once"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    broker_port = int(re.search(r"broker on 127\.0\.0\.1:(\d+)", process_log.read_text()).group(1))  # type: ignore[union-attr]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker_port), timeout=1):
        pass  # the bundled broker was stopped with the service
    assert "stopped cleanly" in process_log.read_text()


def test_invalid_configuration_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    env = clean_env(RW_DATA_DIR=str(tmp_path), RW_LISTEN="nonsense")
    result = subprocess.run([*CLI, "up"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "RW_LISTEN (listen)" in result.stderr and "Traceback" not in result.stderr


def make_events(count: int) -> list[ImageEvent]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        ImageEvent(
            id=f"kill-{i}",
            source=Source.DISTRIBUTION,
            region="region-a",
            action=Action.PUSH,
            kind=ArtifactKind.MANIFEST,
            name=f"team/repo{i % 40}",
            namespace="team",
            repository=f"repo{i % 40}",
            tag=f"t{i}",
            digest="sha256:" + f"{i:064x}",
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=1000,
            occurred_at=start + timedelta(milliseconds=i),
            actor=None,
        )
        for i in range(count)
    ]


async def prepare(database_url: str, bootstrap: str, prefix: str, events: list[ImageEvent]) -> None:
    engine = create_engine(database_url)
    await upgrade_to_head(engine)
    await engine.dispose()
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix, partitions=4, idempotence=False)
    topics = Topics.from_prefix(prefix)
    await ensure_topics(kafka, bootstrap, topics)
    producer = KafkaProducer(kafka, bootstrap)
    await producer.start()
    try:
        for start in range(0, len(events), 500):
            chunk = events[start : start + 500]
            await producer.publish([OutgoingMessage(topics.image_events, e.key, encode_event(e)) for e in chunk])
    finally:
        await producer.stop()


async def counts(dsn: str) -> tuple[int, int]:
    connection = await asyncpg.connect(dsn)
    try:
        history = await connection.fetchval("SELECT count(*) FROM image_events")
        tags = await connection.fetchval("SELECT count(*) FROM artifacts WHERE kind = 'tag' AND deleted_at IS NULL")
        return int(history), int(tags)
    finally:
        await connection.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as handle:
        return subprocess.Popen(
            [*CLI, "worker", "--kinds", "inventory"], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


def test_worker_sigkilled_mid_stream_loses_and_doubles_nothing(
    postgres: PostgresServer, kafka: KafkaBroker, topic_prefix: str, process_log: Path
) -> None:
    total = 6000
    events = make_events(total)
    database = f"kill_{os.getpid()}_{int(time.time())}"
    url = postgres.create_database(database)
    asyncio.run(prepare(url, kafka.bootstrap, topic_prefix, events))
    env = clean_env(
        RW_DATABASE_URL=url, RW_KAFKA_BOOTSTRAP=kafka.bootstrap, RW_KAFKA_IDEMPOTENCE="false",
        RW_KAFKA_TOPIC_PREFIX=topic_prefix, RW_KAFKA_PARTITIONS="4", RW_KAFKA_SESSION_TIMEOUT_MS="2000",
        RW_KAFKA_HEARTBEAT_INTERVAL_MS="300", RW_WORKER_MAX_BATCH="50", RW_LISTEN=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    worker = start_worker(env, process_log)
    try:
        deadline = time.monotonic() + 60
        while (done := asyncio.run(counts(postgres.dsn(database)))[0]) < 200:
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.02)
        worker.kill()  # SIGKILL: no drain, no commit
        worker.wait(timeout=10)
        assert done < total, "the kill must land mid-stream"
        env["RW_LISTEN"] = f"127.0.0.1:{free_port()}"
        worker = start_worker(env, process_log)
        deadline = time.monotonic() + 90
        while asyncio.run(counts(postgres.dsn(database)))[0] < total:
            assert time.monotonic() < deadline, "events were lost after the kill"
            time.sleep(0.2)
        time.sleep(1.0)  # let any redelivered batch land: it must change nothing
        assert asyncio.run(counts(postgres.dsn(database))) == (total, total)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
