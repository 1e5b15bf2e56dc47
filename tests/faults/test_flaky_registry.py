"""Replication to a destination behind a fault-injecting proxy, and a worker killed mid-blob.

source registry ──► replication worker ──► ChaosProxy (5xx, resets mid-blob, slow reads) ──► destination

First a worker process copies a 20 MiB image and is SIGKILLed with two chunks checkpointed (the
third is refused). Then the service starts with the proxy's seeded chaos on, takes that job over
when its lease runs out, and runs a manual enterprise policy execution over 15 images: layers
shared between tags, a Docker-flavoured repository, a multi-platform index, and one repository
whose manifest PUT the destination refuses for good (503, ``Retry-After`` beyond what the client
will wait). Every job must end with the source's digest at the destination or, after its
retries, ``failed`` with the reason; none may be left waiting or running.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.faults.conftest import ScenarioCounts
from tests.support import oci
from tests.support.chaos_proxy import ChaosProxy, ChaosRates
from tests.support.faulty_proxy import Exchange
from tests.support.replication_worker import kill_after_checkpoint, write_worker_config
from tests.support.service import running_service, service_settings, wait_for
from tests.support.services import DistributionRegistry, KafkaBroker
from tests.support.swr_http import signed
from workers.db.engine import create_engine, session_factory
from workers.db.migrate import upgrade_to_head
from workers.db.models import ReplicationJob
from workers.replication import runner, store

SEED = 424242
RATES = ChaosRates(error=0.10, reset=0.10, slow=0.10)
KiB, MiB = 1024, 1 << 20
CHUNK = 8 * MiB  # the copy engine's chunk; blobs over 16 MiB go in chunks
BIG_LAYER = 20 * MiB  # three chunks: 8 + 8 + 4 MiB
INSTANCE = "/v2/default/instances/local"
BIG_UPLOADS = "/v2/dr/big/blobs/uploads/"


@pytest.fixture
def registries() -> Iterator[tuple[DistributionRegistry, DistributionRegistry]]:
    with DistributionRegistry() as source, DistributionRegistry() as destination:
        yield source, destination


@pytest.fixture
async def proxy(registries: tuple[DistributionRegistry, DistributionRegistry]) -> AsyncIterator[ChaosProxy]:
    async with ChaosProxy(registries[1].url, seed=SEED, rates=RATES) as running:
        yield running


async def push_images(source: str) -> dict[str, oci.PushedImage]:
    """15 images for the policy (``team/...``): shared layers, Docker media types, an index."""
    base, middle = os.urandom(300 * KiB), os.urandom(120 * KiB)
    pushed: dict[str, oci.PushedImage] = {}
    for n in range(1, 7):
        pushed[f"team/app:v{n}"] = await oci.push_image(source, "team/app", f"v{n}", layers=[base, 64 * KiB * n])
    for n in range(1, 5):
        layers = [base, middle, 90 * KiB * n]
        pushed[f"team/web:v{n}"] = await oci.push_image(source, "team/web", f"v{n}", layers=layers)
    for n in range(1, 4):
        image = await oci.push_image(source, "team/tools", f"v{n}", layers=[MiB + n * 100 * KiB], media_type="docker")
        pushed[f"team/tools:v{n}"] = image
    pushed["team/multi:v1"] = await oci.push_index(source, "team/multi", "v1", layers=[base, 200 * KiB])
    pushed["team/doomed:v1"] = await oci.push_image(source, "team/doomed", "v1", layers=[middle, 10 * KiB])
    return pushed


async def queue_big_job(sessions: async_sessionmaker[AsyncSession]) -> int:
    request = store.JobRequest(
        key="manual:big-resume", trigger="manual", source_region="region-a", namespace="bulk", repository="big",
        tag="v1", remote_region="region-b", remote_namespace="dr", override=False,
    )  # fmt: skip
    async with sessions.begin() as session:
        (job_id,) = await store.queue_jobs(session, [request], datetime.now(UTC))
    return job_id


async def test_flaky_registry_every_replication_ends_copied_or_failed(
    kafka: KafkaBroker,
    postgres_url: str,
    topic_prefix: str,
    registries: tuple[DistributionRegistry, DistributionRegistry],
    proxy: ChaosProxy,
    tmp_path: Path,
    fault_report: ScenarioCounts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault_report.scenario = "3. registry behind a faulty proxy + killed copy"
    source, destination = registries
    regions = {
        "region-a": {"registry": source.url, "insecure": True},
        "region-b": {"registry": proxy.url, "insecure": True},
    }
    replication = {"lease_s": 3, "reconcile_cron": "0 0 1 1 *", "concurrency": 6}
    settings = service_settings(postgres_url, kafka.bootstrap, topic_prefix, regions=regions, replication=replication)
    # The runner waits 2, 10, 30, 120 s between a job's attempts; the count (5) is what matters here.
    monkeypatch.setattr(runner, "RETRY_DELAYS_S", (0.5, 0.5, 0.5, 0.5))
    engine = create_engine(postgres_url)
    await upgrade_to_head(engine)
    sessions = session_factory(engine)
    try:
        pushed = await push_images(source.url)
        pushed["bulk/big:v1"] = await oci.push_image(source.url, "bulk/big", "v1", layers=[BIG_LAYER])
        fault_report.sent = len(pushed)

        # 1. A worker process copies the big image; the third chunk is refused; it is killed.
        await queue_big_job(sessions)
        proxy.fail(1000, status=503, method="PATCH", path=BIG_UPLOADS, skip=2)
        config = write_worker_config(settings, tmp_path / "worker.yaml", data_dir=tmp_path / "worker-data")
        await kill_after_checkpoint(config, tmp_path / "worker.log", sessions, offset=2 * CHUNK)
        killed_at = len(proxy.log)
        proxy.clear()

        # 2. The service takes over under chaos and runs the policy.
        proxy.chaos = True
        proxy.fail(10**6, status=503, method="PUT", path="/v2/dr/doomed/manifests/", headers={"Retry-After": "3600"})
        layer_put = rf"/v2/dr/tools/blobs/uploads/.*digest={pushed['team/tools:v1'].layer_digests[0]}"
        proxy.reset(method="PUT", path=layer_put, after_bytes=256 * KiB)  # at least one cut mid-blob (1.1 MiB)
        async with running_service(settings) as service:
            policy_id, execution_id = await execute_policy(service.url)
            jobs = await wait_final(sessions, len(pushed), fault_report)
            executions = f"{INSTANCE}/replication/executions?policy_id={policy_id}"
            status, answer = await signed(service.url, "GET", executions)
            assert status == 200, answer
    finally:
        await engine.dispose()

    check_jobs(jobs, pushed, fault_report)
    await check_destination(destination, jobs, pushed, fault_report)
    (execution,) = answer["executions"]
    assert execution["id"] == execution_id
    assert (execution["status"], execution["total"], execution["succeed"], execution["failed"]) == (
        "Failed", 15, 14, 1,
    ), execution  # fmt: skip
    resumed = check_resumed(proxy.log[killed_at:])
    # The first PUT of that layer is cut by the script; chaos may cut a retry of it too (arrival order decides).
    cut = [e for e in proxy.matching("PUT", layer_put) if e.fault and e.fault.startswith("reset")]
    assert cut and cut[0].status is None and cut[0].request_bytes == 256 * KiB, cut
    retried = sum(job.attempts for job in jobs if job.status == store.SUCCESS)
    fault_report.note = (
        f"proxy {len(proxy.log)} requests, injected {dict(sorted(proxy.injected.items()))} + 1 scripted "
        f"mid-blob reset; {retried} job-level retries before success; "
        f"killed worker's upload resumed at {resumed // MiB} MiB of {BIG_LAYER // MiB}; "
        f"team/doomed failed by design (manifest PUT 503, Retry-After 3600)"
    )
    injected = proxy.injected
    assert injected["5xx"] and injected["slow"] and injected["reset"] + injected["answer dropped"], injected


async def execute_policy(base_url: str) -> tuple[int, int]:
    """Create the manual policy over ``team/**`` and start an execution: (policy id, execution id)."""
    status, answer = await signed(base_url, "GET", f"{INSTANCE}/registries")
    assert status == 200, answer
    ids = {r["name"]: int(r["id"]) for r in answer["registries"]}
    body = {
        "name": "chaos",
        "src_registry": {"id": ids["region-a"]},
        "dest_registry": {"id": ids["region-b"]},
        "dest_namespace": "dr",
        "filters": [{"type": "name", "value": "team/**"}],
        "trigger": {"type": "manual"},
        "override": True,
        "enabled": True,
    }
    status, answer = await signed(base_url, "POST", f"{INSTANCE}/replication/policies", body)
    assert status == 201, answer
    policy_id = int(answer["id"])
    status, answer = await signed(base_url, "POST", f"{INSTANCE}/replication/executions", {"policy_id": policy_id})
    assert status == 201, answer
    return policy_id, int(answer["id"])


async def wait_final(
    sessions: async_sessionmaker[AsyncSession], expected: int, report: ScenarioCounts
) -> list[ReplicationJob]:
    async def rows() -> list[ReplicationJob]:
        async with sessions() as session:
            return list((await session.scalars(select(ReplicationJob).order_by(ReplicationJob.id))).all())

    async def all_final() -> list[ReplicationJob] | None:
        found = await rows()
        return found if len(found) >= expected and all(j.status in store.FINAL_STATES for j in found) else None

    try:
        result: list[ReplicationJob] = await wait_for(all_final, limit_s=70.0, interval=0.3)
    except TimeoutError:
        found = await rows()
        report.lost = report.sent - sum(j.status in store.FINAL_STATES for j in found)
        stuck = [(j.id, j.namespace, j.repository, j.tag, j.status, j.attempts, j.detail) for j in found
                 if j.status not in store.FINAL_STATES]  # fmt: skip
        raise AssertionError(f"{len(found)} jobs; not final: {stuck}") from None
    return result


def source_name(job: ReplicationJob) -> str:
    return f"{job.namespace}/{job.repository}:{job.tag}"


def check_jobs(jobs: list[ReplicationJob], pushed: dict[str, oci.PushedImage], report: ScenarioCounts) -> None:
    per_image = Counter(source_name(job) for job in jobs)
    report.duplicates = sum(count - 1 for count in per_image.values())
    assert set(per_image) == set(pushed) and report.duplicates == 0, per_image
    for job in jobs:
        assert job.status in (store.SUCCESS, store.FAILED), (source_name(job), job.status, job.detail)
        if job.status == store.FAILED:  # only after every retry, with the reason recorded
            assert job.attempts == runner.MAX_ATTEMPTS, (source_name(job), job.attempts, job.detail)
            assert job.detail.startswith(f"gave up after {runner.MAX_ATTEMPTS}"), job.detail
    (doomed,) = [job for job in jobs if job.repository == "doomed"]
    assert doomed.status == store.FAILED and "503" in doomed.detail, doomed.detail


async def check_destination(
    destination: DistributionRegistry, jobs: list[ReplicationJob], pushed: dict[str, oci.PushedImage],
    report: ScenarioCounts,
) -> None:  # fmt: skip
    """Read the destination directly (not through the proxy): each success holds the source's digest."""
    for job in jobs:
        image = pushed[source_name(job)]
        copied = await oci.get_manifest(destination.url, f"dr/{job.repository}", job.tag)
        if job.status == store.FAILED:
            report.dead_lettered += 1
            assert copied is None, f"{source_name(job)} failed but its tag exists"
            continue
        assert copied is not None and copied[2] == image.digest == job.digest, (source_name(job), copied)
        assert copied[0] == image.manifest
        for child in image.children:  # every platform of the index, by digest
            below = await oci.get_manifest(destination.url, f"dr/{job.repository}", child.digest)
            assert below is not None and below[2] == child.digest
        report.applied += 1
    report.lost = report.sent - report.applied - report.dead_lettered
    assert report.lost == 0


def check_resumed(exchanges: list[Exchange]) -> int:
    """The first chunk sent after the kill starts at the checkpoint; returns that offset."""
    patches = [e for e in exchanges if e.method == "PATCH" and BIG_UPLOADS in e.path]
    assert patches, "the big image was never uploaded after the kill"
    start = int((patches[0].content_range or "-").split("-")[0] or -1)
    assert start == 2 * CHUNK, f"resumed at {start}, expected {2 * CHUNK} (the checkpoint)"
    return start
