"""Operator commands for replication: ``registry-workers sync run`` and ``sync reconcile``.

``sync run`` queues a manual job in the database (a running service's replication worker picks
it up within a second) and, with ``--follow``, draws its progress until the job ends.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import TextIO

from workers.config import Settings
from workers.db.engine import create_engine, session_factory
from workers.db.models import ReplicationJob
from workers.events import grammar
from workers.replication import store
from workers.replication.clients import RegionClients
from workers.replication.reconcile import Reconciler

BAR_WIDTH = 30


def parse_reference(text: str) -> tuple[str, str, str]:
    """``NAMESPACE/REPO:TAG`` → (namespace, repository, tag); ``ValueError`` naming the problem."""
    name, sep, tag = text.rpartition(":")
    if not sep or "/" in tag or not grammar.is_tag(tag):
        raise ValueError(f"{text!r}: expected NAMESPACE/REPOSITORY:TAG")
    if not grammar.is_repository_name(name) or "/" not in name:
        raise ValueError(f"{name!r} is not a NAMESPACE/REPOSITORY name")
    namespace, repository = grammar.split_repository(name)
    return namespace, repository, tag


async def run_sync(
    settings: Settings,
    reference: str,
    to_region: str,
    remote_namespace: str | None,
    override: bool,
    follow: bool,
    out: TextIO | None = None,
) -> int:
    """Queue the job; returns the exit status (0 queued or succeeded, 1 job failed, 2 bad input)."""
    out = out or sys.stdout
    namespace, repository, tag = parse_reference(reference)
    if to_region not in settings.regions:
        raise ValueError(f"--to: region {to_region!r} is not configured (configured: {', '.join(settings.regions)})")
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        request = store.JobRequest(
            key=f"manual:{uuid.uuid4()}",
            trigger="manual",
            source_region=settings.region,
            namespace=namespace,
            repository=repository,
            tag=tag,
            remote_region=to_region,
            remote_namespace=remote_namespace or namespace,
            override=override,
            operator_name="cli",
        )
        async with sessions.begin() as session:
            (job_id,) = await store.queue_jobs(session, [request], datetime.now(UTC))
        print(f"sync job {job_id} queued: {reference} → {to_region}/{request.remote_namespace}", file=out)
        if not follow:
            return 0
        while True:
            async with sessions() as session:
                job = await session.get(ReplicationJob, job_id)
            assert job is not None
            print(f"\r{_progress_line(job)}", end="", file=out, flush=True)
            if job.status in store.FINAL_STATES:
                print(f"\n{job.status}: {job.detail}", file=out)
                return 0 if job.status in (store.SUCCESS, store.EXISTED) else 1
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def _progress_line(job: ReplicationJob) -> str:
    total, done = job.bytes_total, job.bytes_done
    share = min(done / total, 1.0) if total else (1.0 if job.status == store.SUCCESS else 0.0)
    filled = int(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"[{bar}] {share:4.0%} {done / 1e6:8.1f}/{total / 1e6:.1f} MB {job.status:<8}"


async def run_reconcile(settings: Settings, scope: str | None, out: TextIO | None = None) -> int:
    """Reconcile all rules, or those of ``NAMESPACE`` or ``NAMESPACE/REPO``, and print the report."""
    out = out or sys.stdout
    namespace = repository = None
    if scope:
        namespace, _, rest = scope.partition("/")
        repository = rest or None
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    clients = RegionClients(settings, sessions, store.CheckpointStore(sessions, lambda: datetime.now(UTC)))
    try:
        reconciler = Reconciler(sessions, clients, settings.region, lambda: datetime.now(UTC))
        report = await reconciler.reconcile(namespace=namespace, repository=repository)
        print(report.describe(), file=out)
        if report.queued:
            print("queued jobs: " + ", ".join(str(i) for i in report.queued), file=out)
        return 1 if report.errors else 0
    finally:
        await clients.close()
        await engine.dispose()
