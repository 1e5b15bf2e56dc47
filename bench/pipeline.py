"""End-to-end throughput and latency of the image-event pipeline, against a reference measured in the same run.

    python bench/pipeline.py [--events N] [--rate R] [--duration S] [--database postgres|sqlite|both]

What is measured, and why:

1. **Raw consume rate** — N realistic ``image-events.v1`` messages (``ImageEvent``s of ~500
   repositories with tags and sha256 digests, keyed by repository name) are produced to a
   12-partition topic, then read by a plain ``AIOKafkaConsumer`` (fresh group, earliest,
   ``getmany`` loop, no processing). This is the ceiling of the Kafka client and the broker on
   this machine, so the worker figure below is judged as a *ratio* to it rather than as an
   absolute number that would change from machine to machine.
2. **Worker path rate** — the same topic contents consumed by ONE ``registry-workers worker
   --kinds inventory`` subprocess (its own interpreter: the honest per-process figure) writing to
   a fresh, migrated database; timed from process start until ``count(*) FROM image_events`` is N
   (polled every 50 ms). "Steady" rates leave out start-up (interpreter, group join) by timing
   from the first message/row seen to the last.
3. **Ingress-to-row latency** — a full ``registry-workers up`` subprocess receives Distribution
   notifications (one event per POST, like Distribution) at a fixed rate with bounded in-flight
   requests; latency is ``image_events.recorded_at`` (UTC wall clock of the worker, taken when it
   starts writing the event's batch) minus the UTC wall-clock send time of the POST, on the same
   machine and therefore the same clock.

Everything runs against its own throwaway Postgres and tansu broker (started and stopped here,
by their own PIDs). Results are printed as Markdown and written to ``bench/results/pipeline.md``.
``--profile`` samples the worker process with py-spy (if installed) during the worker path and
writes a summary to ``bench/results/worker-profile.txt`` (stacks: ``worker-profile.folded``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.services import KafkaBroker, PostgresServer, free_port
from workers.config import KafkaSettings
from workers.db.engine import create_engine
from workers.db.migrate import upgrade_to_head
from workers.db.models import ImageEventRecord
from workers.events.model import Action, ArtifactKind, ImageEvent, Source, encode_event
from workers.runtime.kafka import Topics, consumer_options, ensure_topics

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENVELOPE_EXAMPLE = REPO_ROOT / "schemas" / "examples" / "distribution" / "push-manifest.json"
EVENTS_TABLE = ImageEventRecord.__table__
PARTITIONS = 12
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 300
ROW_POLL_S = 0.05
WORKER_TIMEOUT_S = 100.0
INGRESS_TOKEN = "bench-ingress-token"
DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
BLOB_TYPE = "application/octet-stream"
SCHEMA_HEADER = [("rw-schema", b"image-events.v1")]


# --------------------------------------------------------------------------------------------- events


class EventFactory:
    """Realistic Distribution traffic as image events: layer and manifest pushes, pulls, deletes."""

    def __init__(self, seed: int, repositories: int, region: str = "region-a"):
        self._rng = random.Random(seed)
        self._region = region
        self._names = [self._repository_name(i) for i in range(repositories)]
        self._manifests: dict[str, list[tuple[str, str]]] = {}
        self._clock = datetime.now(UTC) - timedelta(hours=1)

    def _repository_name(self, index: int) -> str:
        team = f"team-{index % 40:02d}"
        app = self._rng.choice(("api", "web", "worker", "billing", "auth", "search", "gateway", "ingest"))
        return f"{team}/{app}-{index}" if index % 5 else f"{team}/platform/{app}-{index}"

    def _digest(self) -> str:
        return "sha256:" + self._rng.randbytes(32).hex()

    def _tag(self) -> str:
        roll = self._rng.random()
        if roll < 0.1:
            return "latest"
        if roll < 0.4:
            return f"git-{self._rng.randbytes(4).hex()}"
        return f"{self._rng.randint(0, 3)}.{self._rng.randint(0, 30)}.{self._rng.randint(0, 99)}"

    def _event(
        self, action: Action, kind: ArtifactKind, name: str, digest: str, *, tag: str | None = None,
        media_type: str | None = None, size: int | None = None,
    ) -> ImageEvent:  # fmt: skip
        self._clock += timedelta(milliseconds=self._rng.randint(1, 20))
        namespace, _, repository = name.partition("/")
        return ImageEvent(
            id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            source=Source.DISTRIBUTION, region=self._region, action=action, kind=kind,
            name=name, namespace=namespace, repository=repository, tag=tag, digest=digest,
            media_type=media_type, size=size, occurred_at=self._clock, actor="ci-bot",
        )  # fmt: skip

    def push(self) -> list[ImageEvent]:
        """An image push: its layers and config as tagless blob pushes, then the tagged manifest."""
        name = self._rng.choice(self._names)
        events = [
            self._event(Action.PUSH, ArtifactKind.BLOB, name, self._digest(), media_type=BLOB_TYPE,
                        size=self._rng.randint(1_000, 60_000_000))
            for _ in range(self._rng.randint(2, 6))
        ]  # fmt: skip
        tag, digest = self._tag(), self._digest()
        self._manifests.setdefault(name, []).append((tag, digest))
        size = self._rng.randint(400, 2_000)
        events.append(self._event(Action.PUSH, ArtifactKind.MANIFEST, name, digest, tag=tag,
                                  media_type=MANIFEST_TYPE, size=size))  # fmt: skip
        return events

    def pull(self) -> list[ImageEvent]:
        """A pull of a known image by tag: the manifest, then some of its layers."""
        if not self._manifests:
            return self.push()
        name = self._rng.choice(list(self._manifests))
        tag, digest = self._rng.choice(self._manifests[name])
        events = [self._event(Action.PULL, ArtifactKind.MANIFEST, name, digest, tag=tag, media_type=MANIFEST_TYPE)]
        events += [
            self._event(Action.PULL, ArtifactKind.BLOB, name, self._digest(), media_type=BLOB_TYPE)
            for _ in range(self._rng.randint(1, 4))
        ]
        return events

    def delete(self) -> list[ImageEvent]:
        """A delete by digest (Distribution refuses deletes by tag)."""
        if not self._manifests:
            return self.push()
        name = self._rng.choice(list(self._manifests))
        _, digest = self._manifests[name].pop()
        if not self._manifests[name]:
            del self._manifests[name]
        return [self._event(Action.DELETE, ArtifactKind.MANIFEST, name, digest)]

    def events(self, count: int) -> list[ImageEvent]:
        """``count`` events: about 55 % of the scenarios are pushes, 40 % pulls, 5 % deletes."""
        scenarios = (self.push, self.pull, self.delete)
        out: list[ImageEvent] = []
        while len(out) < count:
            out += self._rng.choices(scenarios, weights=(55, 40, 5))[0]()
        return out[:count]

    def repository(self) -> str:
        return self._rng.choice(self._names)

    def digest(self) -> str:
        return self._digest()


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes


def encode_messages(events: Sequence[ImageEvent]) -> list[Message]:
    return [Message(event.key, encode_event(event)) for event in events]


def describe_mix(events: Sequence[ImageEvent]) -> str:
    mix = Counter(f"{e.action.value} {e.kind.value}" for e in events)
    return ", ".join(f"{kind} {count / len(events):.0%}" for kind, count in mix.most_common())


# --------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Rate:
    """``count`` items in ``elapsed`` s from start; ``steady_count`` in ``steady_elapsed`` after the first."""

    count: int
    elapsed: float
    steady_count: int
    steady_elapsed: float
    complete: bool = True

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    @property
    def steady_per_s(self) -> float:
        return self.steady_count / self.steady_elapsed if self.steady_elapsed else 0.0


@dataclass(frozen=True)
class WorkerStats:
    """From the process's own ``/metrics``: how many batches, and how long ``handle`` took."""

    batches: int = 0
    handle_s: float = 0.0
    consumed: int = 0
    kafka_to_row_mean_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.consumed / self.batches if self.batches else 0.0

    @property
    def mean_handle_ms(self) -> float:
        return 1000 * self.handle_s / self.batches if self.batches else 0.0


@dataclass(frozen=True)
class WorkerRun:
    database: str
    rate: Rate
    stats: WorkerStats
    produce: Rate


@dataclass(frozen=True)
class Latency:
    database: str
    target_rate: float
    duration_s: float
    inflight: int
    sent: int
    accepted: int
    landed: int
    achieved_rate: float
    row_ms: list[float]
    http_ms: list[float]
    stats: WorkerStats


@dataclass
class Report:
    args: argparse.Namespace
    mix: str = ""
    raw: Rate | None = None
    workers: list[WorkerRun] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    profile: str = ""


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------------------------- Kafka


def kafka_settings(bootstrap: str, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap=bootstrap, idempotence=False, topic_prefix=prefix, partitions=PARTITIONS,
        session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )  # fmt: skip


async def produce(kafka: KafkaSettings, messages: Sequence[Message]) -> Rate:
    """Create the service's topics (12 partitions) and produce ``messages`` to image-events, acks=all."""
    topics = Topics.from_prefix(kafka.topic_prefix)
    await ensure_topics(kafka, kafka.bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=False,
                                linger_ms=5, max_batch_size=256 * 1024)  # fmt: skip
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [
            await producer.send(topics.image_events, m.value, key=m.key, headers=SCHEMA_HEADER) for m in messages
        ]
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return Rate(len(messages), elapsed, len(messages), elapsed)


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records when the group join first assigned partitions."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.at = 0.0

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        if not self._event.is_set():
            self.at = time.perf_counter()
            self._event.set()

    async def wait(self, timeout_s: float) -> float:
        """The ``perf_counter`` time of the first assignment (getmany drives the join)."""
        async with asyncio.timeout(timeout_s):
            await self._event.wait()
        return self.at


async def consume_raw(kafka: KafkaSettings, expected: int, timeout_s: float = 60.0) -> Rate:
    """A plain consumer in a fresh group reads the image-events topic to its end; no processing.

    "Steady" starts once the group join has assigned partitions (the first ``getmany`` may hold
    every message at once, so the first message is no usable start mark here).
    """
    consumer = AIOKafkaConsumer(**consumer_options(kafka, kafka.bootstrap, f"bench-raw-{uuid.uuid4().hex}"))
    assigned = _Assigned()
    consumer.subscribe([Topics.from_prefix(kafka.topic_prefix).image_events], listener=assigned)
    started = time.perf_counter()
    await consumer.start()
    seen = 0
    try:
        assigned_at = await assigned.wait(timeout_s)
        while seen < expected and time.perf_counter() - started < timeout_s:
            fetched = await consumer.getmany(timeout_ms=100)
            seen += sum(len(records) for records in fetched.values())
        ended = time.perf_counter()
    finally:
        await consumer.stop()
    return Rate(seen, ended - started, seen, ended - assigned_at, complete=seen >= expected)


# --------------------------------------------------------------------------------------------- database


def fresh_database(pg: PostgresServer | None, workdir: Path, name: str) -> str:
    """A new, empty database: ``createdb`` on the bench's Postgres, or a new SQLite file."""
    if pg is not None:
        return pg.create_database(name)
    return f"sqlite+aiosqlite:///{workdir / f'{name}.db'}"


async def migrate(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


async def count_events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(EVENTS_TABLE))).scalar_one())


async def recorded_at(engine: AsyncEngine, ids: Sequence[str], chunk: int = 500) -> dict[str, float]:
    """``id → recorded_at`` (POSIX seconds, UTC) for the rows of ``ids`` that exist."""
    found: dict[str, float] = {}
    async with engine.connect() as connection:
        for start in range(0, len(ids), chunk):
            query = select(EVENTS_TABLE.c.id, EVENTS_TABLE.c.recorded_at).where(
                EVENTS_TABLE.c.id.in_(ids[start : start + chunk])
            )
            for event_id, at in await connection.execute(query):
                found[event_id] = at.astimezone(UTC).timestamp()
    return found


# --------------------------------------------------------------------------------------------- processes


class ServiceProcess:
    """One ``python -m workers ROLE`` subprocess, logging to a file; stopped by its own PID."""

    def __init__(self, role_args: Sequence[str], env: dict[str, str], log_path: Path, listen: str):
        self._cmd = [sys.executable, "-m", "workers", *role_args]
        self._env = env
        self.log_path = log_path
        self.listen = listen
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self._proc = subprocess.Popen(self._cmd, env=self._env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=REPO_ROOT)  # fmt: skip
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raises ``RuntimeError`` with the log tail when the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(self._cmd)} exited with {self._proc.returncode}:\n{tail}")

    def stop(self, timeout_s: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_env(database_url: str, bootstrap: str, prefix: str, workdir: Path) -> dict[str, str]:
    """The caller's environment without any ``RW_*``, plus this run's service settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    data_dir = workdir / f"data-{prefix}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env.update({
        "RW_DATABASE_URL": database_url,
        "RW_KAFKA_BOOTSTRAP": bootstrap,
        "RW_KAFKA_IDEMPOTENCE": "false",
        "RW_KAFKA_TOPIC_PREFIX": prefix,
        "RW_KAFKA_PARTITIONS": str(PARTITIONS),
        "RW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "RW_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
        "RW_LISTEN": f"127.0.0.1:{free_port()}",
        "RW_DATA_DIR": str(data_dir),
        "RW_INGRESS_TOKEN": INGRESS_TOKEN,
        "RW_ADMIN_ACCESS_KEY": "BENCHADMINACCESSKEY1",
        "RW_ADMIN_SECRET_KEY": "bench-admin-secret-key",
    })  # fmt: skip
    return env


def start_service(role_args: Sequence[str], env: dict[str, str], workdir: Path, name: str) -> ServiceProcess:
    return ServiceProcess(role_args, env, workdir / f"{name}.log", env["RW_LISTEN"])


async def scrape_stats(listen: str) -> WorkerStats:
    """Batch count and ``handle`` time of the inventory worker from the process's ``/metrics``."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{listen}/metrics") as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") == "inventory":
                values[sample.name] = sample.value
    latency_count = values.get("rw_event_latency_seconds_count", 0.0)
    return WorkerStats(
        batches=int(values.get("rw_batch_processing_seconds_count", 0)),
        handle_s=values.get("rw_batch_processing_seconds_sum", 0.0),
        consumed=int(values.get("rw_events_consumed_total", 0)),
        kafka_to_row_mean_s=values.get("rw_event_latency_seconds_sum", 0.0) / latency_count if latency_count else 0.0,
    )


# --------------------------------------------------------------------------------------------- worker path


async def wait_for_rows(engine: AsyncEngine, expected: int, process: ServiceProcess, sampler: Sampler) -> Rate:
    """Poll ``count(*)`` every 50 ms from the process's start until ``expected`` rows exist."""
    first_at, first_count, count = 0.0, 0, 0
    while count < expected:
        now = time.perf_counter()
        if now - process.started_at > WORKER_TIMEOUT_S:
            break
        process.check_alive()
        count = await count_events(engine)
        if count and not first_count:
            first_at, first_count = time.perf_counter(), count
            sampler.attach(process.pid)
        if count < expected:
            await asyncio.sleep(ROW_POLL_S)
    ended = time.perf_counter()
    return Rate(count, ended - process.started_at, count - first_count, ended - first_at, complete=count >= expected)


async def measure_worker(
    database_url: str, expected: int, process: ServiceProcess, sampler: Sampler
) -> tuple[Rate, WorkerStats]:
    engine = create_engine(database_url, pool_size=1)
    try:
        rate = await wait_for_rows(engine, expected, process, sampler)
    finally:
        await engine.dispose()
    return rate, await scrape_stats(process.listen)


def run_worker_path(
    database: str, database_url: str, kafka: KafkaSettings, expected: int, workdir: Path, profile_to: Path | None
) -> tuple[Rate, WorkerStats]:
    """One worker subprocess consumes the (already produced) image-events topic of ``kafka``."""
    asyncio.run(migrate(database_url))
    env = service_env(database_url, kafka.bootstrap, kafka.topic_prefix, workdir)
    sampler = Sampler(profile_to)
    with start_service(["worker", "--kinds", "inventory"], env, workdir, f"worker-{database}") as worker:
        result = asyncio.run(measure_worker(database_url, expected, worker, sampler))
    sampler.finish()
    return result


class Sampler:
    """py-spy sampling one process into ``output`` (raw collapsed stacks); a no-op without ``output``.

    Attached once the process is busy (attaching right after ``exec`` fails: the interpreter is
    not loaded yet), it stops by itself when the sampled process exits.
    """

    def __init__(self, output: Path | None):
        self.output = output
        self._proc: subprocess.Popen[bytes] | None = None

    def attach(self, pid: int) -> None:
        if self.output is None or self._proc is not None:
            return
        cmd = ["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
               "--output", str(self.output)]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def finish(self, timeout_s: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def summarise_profile(raw_path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} samples at 200 Hz (idle time not sampled)", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (to/module.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


# --------------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Sent:
    event_id: str
    sent_at: float  # POSIX seconds (UTC wall clock) right before the request
    http_s: float
    status: int


def distribution_envelope(template: dict[str, object], index: int, factory: EventFactory) -> tuple[str, bytes]:
    """One push-manifest notification like Distribution sends it, with a unique id, tag and digest."""
    event = copy.deepcopy(template)
    event_id, repository, digest, tag = str(uuid.uuid4()), factory.repository(), factory.digest(), f"bench-{index}"
    target = event["target"]
    assert isinstance(target, dict) and isinstance(event["request"], dict)
    target.update(repository=repository, digest=digest, tag=tag,
                  url=f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest}")  # fmt: skip
    event.update(id=event_id, timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    event["request"]["id"] = str(uuid.uuid4())
    return event_id, orjson.dumps({"events": [event]})


async def post_one(http: aiohttp.ClientSession, url: str, event_id: str, body: bytes, slots: asyncio.Semaphore) -> Sent:
    headers = {"Content-Type": DISTRIBUTION_TYPE, "Authorization": f"Bearer {INGRESS_TOKEN}"}
    try:
        sent_at, started = datetime.now(UTC).timestamp(), time.perf_counter()
        try:
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        return Sent(event_id, sent_at, time.perf_counter() - started, status)
    finally:
        slots.release()


async def send_at_rate(
    http: aiohttp.ClientSession, url: str, bodies: Sequence[tuple[str, bytes]], rate: float, inflight: int
) -> list[Sent]:
    """Open loop: request i starts at ``i / rate`` s (later only when ``inflight`` requests are pending)."""
    slots = asyncio.Semaphore(inflight)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for index, (event_id, body) in enumerate(bodies):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(post_one(http, url, event_id, body, slots)))
    return list(await asyncio.gather(*tasks))


async def wait_ready(process: ServiceProcess, timeout_s: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() < deadline:
            process.check_alive()
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://{process.listen}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"service on {process.listen} not ready within {timeout_s} s")


async def wait_for_count(engine: AsyncEngine, expected: int, timeout_s: float) -> int:
    deadline = time.perf_counter() + timeout_s
    count = await count_events(engine)
    while count < expected and time.perf_counter() < deadline:
        await asyncio.sleep(ROW_POLL_S)
        count = await count_events(engine)
    return count


async def measure_latency(
    process: ServiceProcess, database: str, database_url: str, args: argparse.Namespace, factory: EventFactory
) -> Latency:
    template = orjson.loads(ENVELOPE_EXAMPLE.read_bytes())["events"][0]
    url = f"http://{process.listen}/events/distribution"
    warmup = [distribution_envelope(template, -i, factory) for i in range(1, 21)]
    bodies = [distribution_envelope(template, i, factory) for i in range(int(args.rate * args.duration))]
    await wait_ready(process)
    engine = create_engine(database_url, pool_size=1)
    connector = aiohttp.TCPConnector(limit=args.inflight)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            await send_at_rate(http, url, warmup, 50, args.inflight)  # the consumer has joined once these land
            await wait_for_count(engine, len(warmup), 30)
            sent = await send_at_rate(http, url, bodies, args.rate, args.inflight)
        accepted = [s for s in sent if s.status == 202]
        await wait_for_count(engine, len(warmup) + len(accepted), 30)
        landed = await recorded_at(engine, [s.event_id for s in accepted])
    finally:
        await engine.dispose()
    span = sent[-1].sent_at - sent[0].sent_at if len(sent) > 1 else 0.0
    return Latency(
        database=database, target_rate=args.rate, duration_s=args.duration, inflight=args.inflight,
        sent=len(sent), accepted=len(accepted), landed=len(landed),
        achieved_rate=(len(sent) - 1) / span if span else 0.0,
        row_ms=[1000 * (landed[s.event_id] - s.sent_at) for s in accepted if s.event_id in landed],
        http_ms=[1000 * s.http_s for s in accepted], stats=await scrape_stats(process.listen),
    )  # fmt: skip


def run_latency(
    database: str, database_url: str, bootstrap: str, workdir: Path, args: argparse.Namespace, factory: EventFactory
) -> Latency:
    prefix = f"bench-latency-{database}"
    with start_service(["up"], service_env(database_url, bootstrap, prefix, workdir), workdir, f"up-{database}") as up:
        return asyncio.run(measure_latency(up, database, database_url, args, factory))


# --------------------------------------------------------------------------------------------- report


def _n(value: float) -> str:
    return f"{value:,.0f}"


def throughput_table(report: Report) -> list[str]:
    raw = report.raw
    assert raw is not None
    lines = [
        "| Measurement | Steady rate | From start (incl. start-up) | Notes |",
        "| --- | ---: | ---: | --- |",
        f"| Raw consume: `AIOKafkaConsumer.getmany`, no processing | {_n(raw.steady_per_s)} msg/s | "
        f"{_n(raw.per_s)} msg/s ({raw.elapsed:.2f} s) | {_n(raw.count)} messages, {PARTITIONS} partitions, "
        "fresh group |",
    ]
    for run in report.workers:
        rate, stats = run.rate, run.stats
        lines.append(
            f"| Worker path: 1 `worker --kinds inventory` process → {run.database} | "
            f"{_n(rate.steady_per_s)} events/s | {_n(rate.per_s)} events/s ({rate.elapsed:.2f} s) | "
            f"{_n(rate.count)} rows{'' if rate.complete else ' (TIMED OUT)'}; {stats.batches} batches of "
            f"{stats.mean_batch:.0f} events on average, {stats.mean_handle_ms:.0f} ms each in `handle` "
            f"(batches of different partitions overlap) |"
        )
        lines.append(
            f"| Ratio worker / raw ({run.database}) | **{rate.steady_per_s / raw.steady_per_s:.1%}** | "
            f"{rate.per_s / raw.per_s:.1%} | goal ≥ 25 % (steady): "
            f"{'met' if rate.steady_per_s >= 0.25 * raw.steady_per_s else 'NOT met'} |"
        )
    return lines


def latency_table(report: Report) -> list[str]:
    lines = [
        "| Ingress → row | Target rate | Achieved | Accepted / landed | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lat in report.latencies:
        for label, values in (("row (`recorded_at` - send)", lat.row_ms), ("HTTP 202 answer", lat.http_ms)):
            pcts = " | ".join(f"{percentile(values, p):.0f} ms" for p in (50, 90, 99, 100))
            lines.append(
                f"| {lat.database}: {label} | {lat.target_rate:.0f}/s for {lat.duration_s:.0f} s | "
                f"{lat.achieved_rate:.1f}/s | {lat.accepted} / {lat.landed} of {lat.sent} | {pcts} |"
            )
    return lines


def render(report: Report) -> str:
    args = report.args
    produced = report.workers[0].produce.per_s if report.workers else 0.0
    lines = [
        f"## Pipeline benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}; "
        "tansu broker (memory), Postgres with fsync off.",
        f"Parameters: `--events {args.events} --rate {args.rate:g} --duration {args.duration:g} "
        f"--inflight {args.inflight} --database {args.database}`; {args.repositories} repositories, "
        f"{PARTITIONS} partitions, seed {args.seed}. Mix: {report.mix}. Produce (acks=all): {_n(produced)} msg/s.",
        "",
        *throughput_table(report),
        "",
    ]
    if report.latencies:
        lat = report.latencies[0]
        lines += [
            *latency_table(report),
            "",
            f"One event per POST, ≤ {lat.inflight} requests in flight. `recorded_at` is the worker's UTC clock when it "
            "starts writing the batch, so the row becomes visible up to one batch write later (mean batch write in "
            f"the `up` process: {lat.stats.mean_handle_ms:.1f} ms, {lat.stats.mean_batch:.1f} events per batch; "
            f"mean broker-timestamp → history written: {1000 * lat.stats.kafka_to_row_mean_s:.0f} ms).",
            "",
        ]
    if report.profile:
        lines += ["Worker profile (py-spy, worker path): see `bench/results/worker-profile.txt`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="messages for the throughput runs")
    parser.add_argument("--rate", type=float, default=200.0, help="notifications per second for the latency run")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the latency run")
    parser.add_argument("--inflight", type=int, default=32, help="max concurrent POSTs in the latency run")
    parser.add_argument("--database", choices=("postgres", "sqlite", "both"), default="postgres")
    parser.add_argument("--repositories", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-latency", action="store_true", help="throughput only")
    parser.add_argument("--profile", action="store_true", help="sample the first worker-path run with py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "pipeline.md")
    return parser.parse_args(argv)


def profile_path(args: argparse.Namespace) -> Path | None:
    """Where py-spy writes collapsed stacks (flamegraph.pl or speedscope read them), with ``--profile``."""
    if not args.profile:
        return None
    if shutil.which("py-spy") is None:
        print("--profile: py-spy is not installed (pip install py-spy); running without it", file=sys.stderr)
        return None
    return args.output.parent / "worker-profile.folded"


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> Report:
    databases = ("postgres", "sqlite") if args.database == "both" else (args.database,)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
    broker = stack.enter_context(KafkaBroker())
    pg = stack.enter_context(PostgresServer()) if "postgres" in databases else None
    factory = EventFactory(args.seed, args.repositories)
    events = factory.events(args.events)
    messages = encode_messages(events)
    report = Report(args, mix=describe_mix(events))
    spy_output = profile_path(args)
    for index, database in enumerate(databases):
        kafka = kafka_settings(broker.bootstrap, f"bench-worker-{database}")
        url = fresh_database(pg if database == "postgres" else None, workdir, f"worker_{database}")
        produced = asyncio.run(produce(kafka, messages))
        if report.raw is None:
            report.raw = asyncio.run(consume_raw(kafka, len(messages)))
            print(f"raw consume: {report.raw.steady_per_s:,.0f} msg/s steady", file=sys.stderr)
        rate, stats = run_worker_path(database, url, kafka, len(messages), workdir, spy_output if index == 0 else None)
        report.workers.append(WorkerRun(database, rate, stats, produced))
        print(f"worker path ({database}): {rate.steady_per_s:,.0f} events/s steady", file=sys.stderr)
    if spy_output is not None and spy_output.exists():
        report.profile = summarise_profile(spy_output)
    for database in () if args.skip_latency else databases:
        url = fresh_database(pg if database == "postgres" else None, workdir, f"latency_{database}")
        report.latencies.append(run_latency(database, url, broker.bootstrap, workdir, args, factory))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        report = run(args, stack)
    text = render(report)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    if report.profile:
        (args.output.parent / "worker-profile.txt").write_text(report.profile + "\n")
        print(report.profile)
    print(f"total run time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
