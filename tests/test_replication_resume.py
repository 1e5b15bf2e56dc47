"""A replication worker SIGKILLed mid-copy: another resumes the upload where it stopped.

The destination sits behind a fault-injecting proxy that refuses the third chunk of the big
layer (503, again and again) so the first worker is mid-blob, with two chunks acknowledged and
checkpointed in Postgres, when it is killed. The second worker takes the job over when the
lease expires and continues from the checkpoint: the chunks already acknowledged are not sent
again, and the copy ends with the source's digest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.support import oci
from tests.support.faulty_proxy import FaultyProxy
from tests.support.services import DistributionRegistry, KafkaBroker, PostgresServer, free_port
from workers.db.engine import create_engine, session_factory
from workers.db.migrate import upgrade_to_head
from workers.db.models import ReplicationJob, UploadCheckpoint
from workers.replication import store

MiB = 1 << 20
LAYER = 40 * MiB  # chunked: 5 chunks of 8 MiB
CHUNK = 8 * MiB


@pytest.fixture
def registries() -> Iterator[tuple[DistributionRegistry, DistributionRegistry]]:
    with DistributionRegistry() as source, DistributionRegistry() as destination:
        yield source, destination


@pytest.fixture
async def proxy(registries: tuple[DistributionRegistry, DistributionRegistry]) -> AsyncIterator[FaultyProxy]:
    async with FaultyProxy(registries[1].url) as running:
        yield running


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    with log.open("a") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(config), "worker", "--kinds", "replication"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


async def test_killed_worker_copy_resumes_from_the_checkpoint(
    postgres: PostgresServer,
    kafka: KafkaBroker,
    topic_prefix: str,
    registries: tuple[DistributionRegistry, DistributionRegistry],
    proxy: FaultyProxy,
    tmp_path: Path,
) -> None:
    source, _ = registries
    pushed = await oci.push_image(source.url, "team/big", "v1", layers=(LAYER,))
    url = postgres.create_database(f"resume_{int(time.time())}")
    engine = create_engine(url)
    await upgrade_to_head(engine)
    sessions = session_factory(engine)
    request = store.JobRequest(
        key="manual:resume",
        trigger="manual",
        source_region="region-a",
        namespace="team",
        repository="big",
        tag="v1",
        remote_region="region-b",
        remote_namespace="dr",
        override=False,
    )
    async with sessions.begin() as session:
        (job_id,) = await store.queue_jobs(session, [request], datetime.now(UTC))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": url,
                "listen": f"127.0.0.1:{free_port()}",
                "data_dir": str(tmp_path / "data"),
                "secrets": {"keys": ["Z2V0LWEtcmVhbC1mZXJuZXQta2V5LTMyLWJ5dGVzISE="]},
                "kafka": {
                    "bootstrap": kafka.bootstrap,
                    "idempotence": False,
                    "topic_prefix": topic_prefix,
                    "partitions": 2,
                    "session_timeout_ms": 2000,
                    "heartbeat_interval_ms": 300,
                },
                "regions": {
                    "region-a": {"registry": source.url, "insecure": True},
                    "region-b": {"registry": proxy.url, "insecure": True},
                },
                "replication": {"lease_s": 3, "reconcile_cron": "0 0 1 1 *"},
            }
        )
    )
    proxy.fail(1000, status=503, method="PATCH", path="/blobs/uploads/", skip=2)  # the 3rd chunk never lands

    log = tmp_path / "workers.log"
    worker = start_worker(config, log)
    try:
        deadline = time.monotonic() + 60
        while not await _checkpoint_at(sessions, 2 * CHUNK):
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first worker never checkpointed two chunks"
            await asyncio.sleep(0.2)
        worker.kill()  # SIGKILL: no cleanup, the job stays leased until the lease runs out
        worker.wait(timeout=10)
        before = proxy.matching("PATCH", "/blobs/uploads/")
        sent_before = sum(e.request_bytes for e in before)
        proxy.clear()

        worker = start_worker(config, log)
        deadline = time.monotonic() + 90
        while (job := await _job(sessions, job_id)).status not in store.FINAL_STATES:
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the job did not finish: {job.status} {job.detail}"
            await asyncio.sleep(0.3)
    finally:
        worker.kill()
        worker.wait(timeout=10)
        await engine.dispose()

    assert job.status == store.SUCCESS, job.detail
    copied = await oci.get_manifest(registries[1].url, "dr/big", "v1")
    assert copied is not None and copied[2] == pushed.digest
    patches = proxy.matching("PATCH", "/blobs/uploads/")[len(before) :]
    sent_after = sum(e.request_bytes for e in patches)
    assert sent_before >= 2 * CHUNK
    assert sent_after <= LAYER - 2 * CHUNK, "chunks acknowledged before the kill were sent again"
    first_after = next(e for e in patches if e.request_bytes and e.status == 202)
    assert (first_after.content_range or "").startswith(f"{2 * CHUNK}-")  # resumed at the checkpoint


async def _checkpoint_at(sessions: object, offset: int) -> bool:
    from sqlalchemy import select

    async with sessions() as session:  # type: ignore[operator]
        offsets = (await session.scalars(select(UploadCheckpoint.offset))).all()
    return any(o >= offset for o in offsets)


async def _job(sessions: object, job_id: int) -> ReplicationJob:
    async with sessions() as session:  # type: ignore[operator]
        job = await session.get(ReplicationJob, job_id)
    assert job is not None
    return job
