"""Throughput and latency of the image-event pipeline, each judged against a reference from the same run.

    python bench/pipeline.py [--events N] [--rate R] [--duration S] [--database postgres|sqlite|both] [--profile]

Absolute rates change from machine to machine (and from run to run on a shared 2-core VM), so
every figure is paired with a reference taken in the same run, on the same broker, at the same
moment, and the verdict is the ratio:

1. **Raw consume rate** (the reference) — N realistic ``image-events.v1`` messages (pushes of
   layers and tagged manifests, pulls of those images, deletes by digest, over ~500 repositories
   with sha256 digests, keyed by repository name) are produced to a 12-partition topic, then read
   by a plain ``AIOKafkaConsumer`` with the worker's consumer options (fresh group, earliest,
   ``getmany`` loop, no processing): the ceiling of client plus broker on this machine.
2. **Worker path rate** — the same topic contents consumed by ONE ``registry-workers worker
   --kinds inventory`` subprocess (its own interpreter: the honest per-process figure; running it
   in this process's event loop would share a core with the measuring code) writing to a fresh,
   migrated database, timed from process start until ``count(*) FROM image_events`` is N (polled
   every 50 ms). Goal: worker / raw >= 25 % on the steady rates.
3. **Ingress-to-row latency** — a full ``registry-workers up`` subprocess receives Distribution
   notifications (one event per POST, like Distribution) at a fixed rate with bounded in-flight
   requests; latency is ``image_events.recorded_at`` (the worker's UTC wall clock when it starts
   writing the event's batch) minus the UTC wall-clock send time of the POST; same machine, same
   clock. Reference: produce → plain consumer latency at the same rate with the same client options.

"Steady" leaves out start-up (interpreter, imports, group join): the raw consumer is timed from
its partition assignment, the worker from the first row seen to the last. "From start" figures
include it. CPU per message is the consuming process's own CPU time (``/proc``) in the steady
window. ``--database sqlite`` (or ``both``) runs the worker path and the latency run on SQLite.

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
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
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
from workers.runtime.kafka import Topics, consumer_options, ensure_topics, producer_options

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENVELOPE_EXAMPLE = REPO_ROOT / "schemas" / "examples" / "distribution" / "push-manifest.json"
EVENTS_TABLE = ImageEventRecord.__table__
PARTITIONS = 12
RAW_CONSUMES = 3  # per round; the median is the reference
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 300
ROW_POLL_S = 0.05
WORKER_TIMEOUT_S = 100.0
FLOOR_DURATION_S = 3.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
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
        self._images: dict[str, list[tuple[str, str, list[str]]]] = {}  # name → (tag, digest, layers)
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
        self._images.setdefault(name, []).append((tag, digest, [e.digest for e in events if e.digest]))
        size = self._rng.randint(400, 2_000)
        events.append(self._event(Action.PUSH, ArtifactKind.MANIFEST, name, digest, tag=tag,
                                  media_type=MANIFEST_TYPE, size=size))  # fmt: skip
        return events

    def pull(self) -> list[ImageEvent]:
        """A pull of a known image by tag: the manifest, then the layers the puller lacks."""
        if not self._images:
            return self.push()
        name = self._rng.choice(list(self._images))
        tag, digest, layers = self._rng.choice(self._images[name])
        events = [self._event(Action.PULL, ArtifactKind.MANIFEST, name, digest, tag=tag, media_type=MANIFEST_TYPE)]
        events += [
            self._event(Action.PULL, ArtifactKind.BLOB, name, layer, media_type=BLOB_TYPE)
            for layer in self._rng.sample(layers, self._rng.randint(1, len(layers)))
        ]
        return events

    def delete(self) -> list[ImageEvent]:
        """A delete by digest (Distribution refuses deletes by tag)."""
        if not self._images:
            return self.push()
        name = self._rng.choice(list(self._images))
        _, digest, _ = self._images[name].pop()
        if not self._images[name]:
            del self._images[name]
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
    """``count`` items in ``elapsed`` s from start; ``steady_count`` in ``steady_elapsed`` once running.

    ``cpu``: CPU seconds spent in the steady window by the consuming process (``"consumer"``) and
    by the services it talks to (``"postgres"``, ``"broker"``).
    """

    count: int
    elapsed: float
    steady_count: int
    steady_elapsed: float
    complete: bool = True
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return self.cpu.get("consumer", 0.0)

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    @property
    def steady_per_s(self) -> float:
        return self.steady_count / self.steady_elapsed if self.steady_elapsed else 0.0

    @property
    def cpu_us_per_item(self) -> float:
        return 1e6 * self.cpu_s / self.steady_count if self.steady_count else 0.0

    def cpu_share(self, name: str = "consumer") -> float:
        """Cores ``name`` kept busy in the steady window (1.0 = one core)."""
        return self.cpu.get(name, 0.0) / self.steady_elapsed if self.steady_elapsed else 0.0


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


@dataclass(frozen=True)
class Round:
    """One raw consume and, right after it, the worker path of each database, on fresh topics."""

    raws: list[Rate]  # slowest first
    workers: list[WorkerRun]

    @property
    def raw(self) -> Rate:
        """The reference: the median raw consume."""
        return self.raws[len(self.raws) // 2]

    def ratio(self, index: int = 0) -> float:
        return _ratio(self.workers[index].rate.steady_per_s, self.raw.steady_per_s)


@dataclass
class Report:
    args: argparse.Namespace
    mix: str = ""
    rounds: list[Round] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    profile: str = ""
    floor_ms: list[float] = field(default_factory=list)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
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
        """The ``perf_counter`` time of the first assignment (the join runs in the background after ``start``)."""
        async with asyncio.timeout(timeout_s):
            await self._event.wait()
        return self.at


async def consume_raw(kafka: KafkaSettings, expected: int, meter: CpuMeter, timeout_s: float = 60.0) -> Rate:
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
        meter.start()
        while seen < expected and time.perf_counter() - started < timeout_s:
            fetched = await consumer.getmany(timeout_ms=100)
            seen += sum(len(records) for records in fetched.values())
        ended, cpu = time.perf_counter(), meter.read()
    finally:
        await consumer.stop()
    return Rate(seen, ended - started, seen, ended - assigned_at, complete=seen >= expected, cpu=cpu)


# --------------------------------------------------------------------------------------------- database


@dataclass(frozen=True)
class Services:
    """The bench's own broker and (when needed) Postgres, and a scratch directory."""

    workdir: Path
    broker: KafkaBroker
    pg: PostgresServer | None

    def database_url(self, database: str, name: str) -> str:
        """A new, empty database: ``createdb`` on the bench's Postgres, or a new SQLite file."""
        if database == "postgres":
            assert self.pg is not None
            return self.pg.create_database(name)
        return f"sqlite+aiosqlite:///{self.workdir / f'{name}.db'}"

    def cpu_meter(self, database: str) -> CpuMeter:
        """CPU of the broker, and of Postgres (postmaster and backends) when it is the database."""
        broker_pid = self.broker.pid or 0
        readers = {"broker": lambda: process_cpu_s(broker_pid)}
        if database == "postgres" and self.pg is not None:
            postmaster = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
            readers["postgres"] = lambda: tree_cpu_s(postmaster)
        return CpuMeter(readers)


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


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: ``[state, ppid, ...]``; ``[]`` when gone (Linux only)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far; 0.0 where unavailable."""
    fields = _stat_fields(pid)
    return sum(int(v) for v in fields[11:13]) / CLOCK_TICKS if fields else 0.0


def tree_cpu_s(root: int) -> float:
    """CPU seconds of ``root``, its reaped children and its live children (the postmaster and its backends)."""
    fields = _stat_fields(root)
    total = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        child = _stat_fields(int(stat.parent.name))
        if child and child[1] == str(root):
            total += int(child[11]) + int(child[12])
    return total / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of named processes between ``start()`` and ``read()``."""

    def __init__(self, readers: dict[str, Callable[[], float]]):
        self._readers = readers
        self._base: dict[str, float] = {}

    def with_reader(self, name: str, reader: Callable[[], float]) -> CpuMeter:
        return CpuMeter({name: reader, **self._readers})

    def start(self) -> None:
        self._base = {name: read() for name, read in self._readers.items()}

    def read(self) -> dict[str, float]:
        return {name: read() - self._base.get(name, 0.0) for name, read in self._readers.items()}


def service_env(database_url: str, bootstrap: str, prefix: str, workdir: Path) -> dict[str, str]:
    """The caller's environment without any ``RW_*``, plus this run's service settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_") or k.startswith("RW_WORKER_")}
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


async def wait_for_rows(
    engine: AsyncEngine, expected: int, process: ServiceProcess, sampler: Sampler, meter: CpuMeter
) -> Rate:
    """Poll the worker's handled-events counter every 50 ms until it is ``expected``; then count the rows.

    The counter (``rw_events_consumed_total``) moves once a batch's transaction has committed,
    so it tracks the rows without a ``count(*)`` on the database under test, which costs
    Postgres ~5 ms per poll at 50,000 rows. The rows are counted once at the end.
    """
    first_at, first_count, handled = 0.0, 0, 0
    async with aiohttp.ClientSession() as http:
        while handled < expected:
            now = time.perf_counter()
            if now - process.started_at > WORKER_TIMEOUT_S:
                break
            process.check_alive()
            handled = await handled_events(http, process.listen)
            if handled and not first_count:
                first_at, first_count = time.perf_counter(), handled
                meter.start()
                sampler.attach(process.pid)
            if handled < expected:
                await asyncio.sleep(ROW_POLL_S)
    ended, cpu = time.perf_counter(), meter.read()
    rows = await count_events(engine)
    if not first_count:
        return Rate(rows, ended - process.started_at, 0, 0.0, complete=False)
    steady = ended - first_at
    return Rate(rows, ended - process.started_at, handled - first_count, steady, rows >= expected, cpu)


HANDLED_SAMPLE = re.compile(rb'^rw_events_consumed_total\{kind="inventory"\} (\S+)$', re.MULTILINE)


async def handled_events(http: aiohttp.ClientSession, listen: str) -> int:
    """The worker's count of inventory events handled (committed); 0 until its HTTP server answers."""
    try:
        async with http.get(f"http://{listen}/metrics") as resp:
            body = await resp.read()
    except aiohttp.ClientError:
        return 0
    match = HANDLED_SAMPLE.search(body)
    return int(float(match.group(1))) if match else 0


async def measure_worker(
    database_url: str, expected: int, process: ServiceProcess, sampler: Sampler, meter: CpuMeter
) -> tuple[Rate, WorkerStats]:
    engine = create_engine(database_url, pool_size=1)
    try:
        rate = await wait_for_rows(engine, expected, process, sampler, meter)
    finally:
        await engine.dispose()
    return rate, await scrape_stats(process.listen)


def run_worker_path(
    database: str, database_url: str, kafka: KafkaSettings, expected: int, workdir: Path, services: CpuMeter,
    profile_to: Path | None,
) -> tuple[Rate, WorkerStats]:  # fmt: skip
    """One worker subprocess consumes the (already produced) image-events topic of ``kafka``."""
    asyncio.run(migrate(database_url))
    env = service_env(database_url, kafka.bootstrap, kafka.topic_prefix, workdir)
    sampler = Sampler(profile_to)
    with start_service(["worker", "--kinds", "inventory"], env, workdir, f"worker-{database}") as worker:
        meter = services.with_reader("consumer", lambda: process_cpu_s(worker.pid))
        result = asyncio.run(measure_worker(database_url, expected, worker, sampler, meter))
    sampler.finish()
    return result


def summarise_profile(folded: Path, top: int = 20) -> str:
    """Where the worker's CPU went: sample shares by package and by function (leaf frame = self time).

    SQLAlchemy's async layer runs statements in greenlets, which py-spy shows as separate stacks
    rooted at ``Session.execute``; leaf-frame (self time) shares are exact either way.
    """
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count, frames = int(count_text), [f for f in stack.split(";") if f.strip()]
        total += count
        leaf = frames[-1] if frames else "(no Python frame) (?)"
        by_package[_package(leaf)] += count
        by_function[leaf.rpartition(":")[0] + ")" if ":" in leaf else leaf] += count
        by_stage[_stage(frames)] += count

    def share(samples: int) -> str:
        return f"{100 * samples / max(total, 1):5.1f} %"

    lines = [f"{total} samples at 200 Hz of the steady worker path (idle time is not sampled)", ""]
    lines += ["self time by package:", *(f"  {share(n)}  {name}" for name, n in by_package.most_common())]
    lines += ["", "inclusive time by worker stage (innermost workers.* frame):"]
    lines += [f"  {share(n)}  {name}" for name, n in by_stage.most_common()]
    lines += ["", "self time by function:", *(f"  {share(n)}  {name}" for name, n in by_function.most_common(top))]
    return "\n".join(lines)


def _package(frame: str) -> str:
    """``func (sqlalchemy/sql/compiler.py:12)`` → ``sqlalchemy``; ``workers/events/model.py`` → ``workers.events``."""
    path = frame.rpartition(" (")[2].rpartition(":")[0]
    parts = Path(path).parts
    if not parts:
        return "(no Python frame: native code, or a torn non-blocking sample)"
    if parts[0] == "workers" and len(parts) > 2:
        return f"workers.{parts[1]}"
    return parts[0].removesuffix(".py")


def _stage(frames: Sequence[str]) -> str:
    """The innermost frame in the service's own code, e.g. ``_insert_history (workers/inventory/store.py)``."""
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        if where.startswith("workers/"):
            return f"{name} ({where.rpartition(':')[0]})"
    return "(SQLAlchemy greenlet: statement execution)" if frames else "(no Python frame)"


# --------------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Sent:
    event_id: str
    sent_at: float  # POSIX seconds (UTC wall clock) right before the request
    http_s: float
    status: int


def distribution_envelope(template: dict[str, object], tag: str, factory: EventFactory) -> tuple[str, bytes]:
    """One push-manifest notification like Distribution sends it, with a unique id and digest."""
    event = copy.deepcopy(template)
    event_id, repository, digest = str(uuid.uuid4()), factory.repository(), factory.digest()
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


async def broker_floor(kafka: KafkaSettings, rate: float, duration_s: float) -> list[float]:
    """Produce → plain consumer latency (ms) at ``rate``, with the worker's producer and consumer options.

    The part of ingress-to-row latency that is the broker and client alone, measured in this run.
    """
    topics = Topics.from_prefix(kafka.topic_prefix)
    await ensure_topics(kafka, kafka.bootstrap, topics)
    consumer = AIOKafkaConsumer(**consumer_options(kafka, kafka.bootstrap, f"bench-floor-{uuid.uuid4().hex}"))
    assigned = _Assigned()
    consumer.subscribe([topics.image_events], listener=assigned)
    producer = AIOKafkaProducer(**producer_options(kafka, kafka.bootstrap))
    await consumer.start()
    await producer.start()
    try:
        await assigned.wait(30)
        count = int(rate * duration_s)
        receiving = asyncio.create_task(_receive_stamped(consumer, count))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            stamp = str(datetime.now(UTC).timestamp()).encode()
            await producer.send(topics.image_events, stamp, key=str(index % 500).encode())
        return await asyncio.wait_for(receiving, 30)
    finally:
        await producer.stop()
        await consumer.stop()


async def _receive_stamped(consumer: AIOKafkaConsumer, count: int) -> list[float]:
    latencies: list[float] = []
    while len(latencies) < count:
        fetched = await consumer.getmany(timeout_ms=100)
        now = datetime.now(UTC).timestamp()
        latencies += [1000 * (now - float(r.value)) for records in fetched.values() for r in records]
    return latencies


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
    warmup = [distribution_envelope(template, f"warmup-{i}", factory) for i in range(20)]
    bodies = [distribution_envelope(template, f"bench-{i}", factory) for i in range(int(args.rate * args.duration))]
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


def median_round(report: Report) -> Round:
    """The round whose (first database's) ratio is the median: the one the detailed table shows."""
    ranked = sorted(report.rounds, key=Round.ratio)
    return ranked[(len(ranked) - 1) // 2]


def rounds_table(report: Report) -> list[str]:
    """Every round's reference, worker rates and ratios, and the median ratio the goal is judged by."""
    databases = [run.database for run in report.rounds[0].workers]
    head = " | ".join(f"worker → {d} | ratio ({d})" for d in databases)
    lines = [
        f"| Round | Raw consume (reference: the median of {RAW_CONSUMES}) | {head} |",
        "| ---: | ---: |" + " ---: | ---: |" * len(databases),
    ]
    for number, rnd in enumerate(report.rounds, 1):
        cells = " | ".join(
            f"{_n(run.rate.steady_per_s)} events/s | {rnd.ratio(i):.1%}" for i, run in enumerate(rnd.workers)
        )
        lines.append(f"| {number} | **{_n(rnd.raw.steady_per_s)}** msg/s ({_steady(rnd.raws)}) | {cells} |")
    medians = " | ".join(
        f"| **{statistics.median(rnd.ratio(i) for rnd in report.rounds):.1%}**" for i in range(len(databases))
    )
    lines.append(f"| median | | {medians} |")
    verdict = statistics.median(rnd.ratio() for rnd in report.rounds)
    lines += ["", f"Goal (worker path ≥ 25 % of raw, median of the rounds, {databases[0]}): "
              f"{'met' if verdict >= 0.25 else 'NOT met'} ({verdict:.1%})."]  # fmt: skip
    return lines


def throughput_table(rnd: Round) -> list[str]:
    raw = rnd.raw
    lines = [
        "| Measurement | Steady rate | From start (incl. start-up) | CPU per message (steady) | Notes |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| Raw consume: `AIOKafkaConsumer.getmany`, no processing | {_n(raw.steady_per_s)} msg/s | "
        f"{_n(raw.per_s)} msg/s ({raw.elapsed:.2f} s) | {_cpu(raw)} | {_n(raw.count)} messages, {PARTITIONS} "
        f"partitions, fresh group (median of {RAW_CONSUMES} consumes); steady = after the group join; "
        f"{_service_cpu(raw)} |",
    ]
    for run in rnd.workers:
        rate, stats = run.rate, run.stats
        lines.append(
            f"| Worker path: 1 `worker --kinds inventory` process → {run.database} | "
            f"{_n(rate.steady_per_s)} events/s | {_n(rate.per_s)} events/s ({rate.elapsed:.2f} s) | {_cpu(rate)} | "
            f"{_n(rate.count)} rows{'' if rate.complete else ' (TIMED OUT)'}; steady = first row to last; "
            f"{stats.batches} batches of {stats.mean_batch:.0f} events on average, {stats.mean_handle_ms:.0f} ms "
            f"each in `handle` (batches of different partitions overlap); {_service_cpu(rate)} |"
        )
        lines.append(
            f"| Ratio worker / raw ({run.database}) | **{_ratio(rate.steady_per_s, raw.steady_per_s):.1%}** | "
            f"{_ratio(rate.per_s, raw.per_s):.1%} | "
            f"{_ratio(rate.cpu_us_per_item, raw.cpu_us_per_item):.0f} times the CPU | |"
        )
    return lines


def _steady(rates: Sequence[Rate]) -> str:
    return " / ".join(_n(rate.steady_per_s) for rate in rates)


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


def _cpu(rate: Rate) -> str:
    return f"{rate.cpu_us_per_item:.1f} µs ({rate.cpu_share():.0%} of a core)"


def _service_cpu(rate: Rate) -> str:
    shares = ", ".join(f"{name} {rate.cpu_share(name):.0%}" for name in rate.cpu if name != "consumer")
    return f"meanwhile {shares} of a core"


def latency_table(report: Report) -> list[str]:
    lines = [
        "| Ingress → row | Target rate | Achieved | Accepted / landed | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lat in report.latencies:
        for label, values in (("row (`recorded_at` - send)", lat.row_ms), ("HTTP 202 answer", lat.http_ms)):
            lines.append(
                f"| {lat.database}: {label} | {lat.target_rate:.0f}/s for {lat.duration_s:.0f} s | "
                f"{lat.achieved_rate:.1f}/s | {lat.accepted} / {lat.landed} of {lat.sent} | {_percentiles(values)} |"
            )
    if report.floor_ms:
        lines.append(
            f"| reference: produce → plain consumer, same client options | {report.args.rate:.0f}/s for "
            f"{FLOOR_DURATION_S:.0f} s | | {len(report.floor_ms)} received | {_percentiles(report.floor_ms)} |"
        )
    return lines


def _percentiles(values: Sequence[float]) -> str:
    return " | ".join(f"{percentile(values, p):.0f} ms" for p in (50, 90, 99, 100))


def latency_notes(report: Report) -> list[str]:
    lines = [
        f"One event per POST, at most {report.latencies[0].inflight} requests in flight; both clocks are UTC wall "
        "time on this machine. `recorded_at` is the worker's clock when it starts writing the batch, so a row "
        "becomes visible up to one batch write later. From the `up` process's `/metrics`:"
    ]
    for lat in report.latencies:
        stats, smallest = lat.stats, min(lat.row_ms, default=float("nan"))
        batches = f"{stats.batches} batches of {stats.mean_batch:.1f} events, {stats.mean_handle_ms:.1f} ms each"
        broker_to_row = f"{1000 * stats.kafka_to_row_mean_s:.0f} ms"
        lines.append(
            f"- {lat.database}: {batches}; broker timestamp → history written {broker_to_row} on average; smallest "
            f"latency {smallest:.0f} ms (negative would mean the clocks disagree)."
        )
    return lines


def render(report: Report) -> str:
    args = report.args
    shown = median_round(report)
    produced = shown.workers[0].produce.per_s
    lines = [
        f"## Pipeline benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}; "
        "tansu broker (memory), Postgres with fsync off.",
        f"Parameters: `--events {args.events} --rate {args.rate:g} --duration {args.duration:g} "
        f"--inflight {args.inflight} --database {args.database} --rounds {args.rounds}`; "
        f"{args.repositories} repositories, "
        f"{PARTITIONS} partitions, seed {args.seed}. Mix: {report.mix}. Produce (acks=all): {_n(produced)} msg/s.",
        "",
        f"Throughput, {len(report.rounds)} round(s); the shared machine moves the reference from round to round, "
        "so each worker path is compared with the raw consume measured just before it:",
        "",
        *rounds_table(report),
        "",
        f"The median round ({report.rounds.index(shown) + 1}) in detail:",
        "",
        *throughput_table(shown),
        "",
    ]
    if report.latencies:
        lines += [*latency_table(report), "", *latency_notes(report), ""]
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
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (raw consume + worker paths each)")
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
    folded: Path = args.output.parent / "worker-profile.folded"
    return folded


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> Report:
    databases = ("postgres", "sqlite") if args.database == "both" else (args.database,)
    services = Services(
        workdir=Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-"))),
        broker=stack.enter_context(KafkaBroker()),
        pg=stack.enter_context(PostgresServer()) if "postgres" in databases else None,
    )
    factory = EventFactory(args.seed, args.repositories)
    events = factory.events(args.events)
    report = Report(args, mix=describe_mix(events))
    measure_throughput(args, services, databases, encode_messages(events), report)
    if not args.skip_latency:
        measure_latencies(args, services, databases, factory, report)
    return report


def raw_consumes(kafka: KafkaSettings, expected: int, meter: CpuMeter) -> list[Rate]:
    """``RAW_CONSUMES`` raw consumes of the topic, each in a fresh group, slowest first.

    One consume of 50,000 messages is steady for only 0.2-0.4 s, so a scheduler hiccup moves it
    by half; the median of three is a steadier reference for the worker path that follows.
    """
    rates = [
        asyncio.run(consume_raw(kafka, expected, meter.with_reader("consumer", time.process_time)))
        for _ in range(RAW_CONSUMES)
    ]
    return sorted(rates, key=lambda rate: rate.steady_per_s)


def measure_throughput(
    args: argparse.Namespace, services: Services, databases: Sequence[str], messages: Sequence[Message], report: Report
) -> None:
    """``--rounds`` rounds of: raw consume, then one worker path per database, each on its own fresh topic."""
    spy_output = profile_path(args)
    for number in range(1, args.rounds + 1):
        raws: list[Rate] = []
        workers: list[WorkerRun] = []
        for database in databases:
            kafka = kafka_settings(services.broker.bootstrap, f"bench-r{number}-{database}")
            url = services.database_url(database, f"worker_{database}_{number}")
            produced = asyncio.run(produce(kafka, messages))
            meter = services.cpu_meter(database)
            if not raws:
                raws = raw_consumes(kafka, len(messages), meter)
                print(f"round {number}: raw consume {_steady(raws)} msg/s steady", file=sys.stderr)
            profile_to = spy_output if number == 1 and not workers else None
            rate, stats = run_worker_path(database, url, kafka, len(messages), services.workdir, meter, profile_to)
            workers.append(WorkerRun(database, rate, stats, produced))
            print(f"round {number}: worker path ({database}) {rate.steady_per_s:,.0f} events/s steady", file=sys.stderr)
        report.rounds.append(Round(raws, workers))
    if spy_output is not None and spy_output.exists():
        report.profile = summarise_profile(spy_output)


def measure_latencies(
    args: argparse.Namespace, services: Services, databases: Sequence[str], factory: EventFactory, report: Report
) -> None:
    floor_kafka = kafka_settings(services.broker.bootstrap, "bench-floor")
    report.floor_ms = asyncio.run(broker_floor(floor_kafka, args.rate, FLOOR_DURATION_S))
    for database in databases:
        url = services.database_url(database, f"latency_{database}")
        report.latencies.append(run_latency(database, url, services.broker.bootstrap, services.workdir, args, factory))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        report = run(args, stack)
    text = render(report)
    print(text)
    args.output.write_text(text)
    if report.profile:
        (args.output.parent / "worker-profile.txt").write_text(report.profile + "\n")
        print(report.profile)
    print(f"total run time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
