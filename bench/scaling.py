"""Scale-out: throughput of 1, 2 and 4 worker processes sharing one consumer group on a 12-partition topic.

    python bench/scaling.py [--workers 1,2,4] [--events 30000] [--trigger-events 5000] [--policies 100]
                            [--scale-out-events 200000] [--rounds 3] [--quick] [--output PATH]

``--trigger-events 0`` / ``--scale-out-events 0`` skip those parts; ``--quick`` is a smoke run
(1 and 2 workers, small backlogs, one round, no scale-out; its figures mean nothing).

What is measured, per worker count N (separate OS processes, one consumer group):

1. **Inventory path** — N ``registry-workers worker --kinds inventory`` processes join the group
   on an empty 12-partition ``image-events.v1`` topic (the bench waits until the assignment is
   stable: N members, disjoint, all 12 partitions), are frozen (SIGSTOP), the bench produces
   ``--events`` realistic image events (``pipeline.EventFactory``: layer and manifest pushes,
   pulls, deletes over 500 repositories, keyed by repository), and the workers are thawed
   (SIGCONT). Pre-loading while frozen gives every N the same backlog and keeps the producer's
   CPU out of the measured window; freezing lasts well under the session timeout (6 s here), and
   any assignment change during the window is counted and reported. The rate is ``count(*) FROM
   image_events`` polled every 50 ms, from the first row seen to the last (a fresh, migrated
   database per run); CPU is measured over the same span. Reference in the same run: a plain
   ``AIOKafkaConsumer`` (fresh group, the worker's consumer options, no processing) reading the
   same topic afterwards, as in ``bench/pipeline.py``.
2. **Trigger path** (``--trigger-events``, fewer) — ``--policies`` webhook policies created once
   through the signed API of an ``api`` process (then stopped), a receiver in its own process
   (``bench/triggers.py``), N ``worker --kinds triggers`` processes; the same freeze / pre-load /
   thaw, with tagged manifest pushes that each match one policy; the rate is the receiver's
   arrival count, polled every 50 ms, first webhook to last. Reference: the bench POSTing the
   same Harbor bodies straight at the receiver.
3. **Scale-out under load** — one inventory worker draining a backlog (produced in chunks while
   it is frozen), a second process started after 1 s of flow: how long the new process takes to
   be ready, the rebalance, the longest pause in row progress, and the rate before and after.

Every worker count runs ``--rounds`` times, in alternating order; tables give the median.

For every measured window the CPU time of each process is read from ``/proc``: every worker,
Postgres (postmaster and backends), the broker, the receiver, the bench itself, and the whole
machine (``/proc/stat``), so the time of other processes on a shared machine shows. Consumer-group
formation is read from the workers' logs (``ready``, ``assigned partitions``), stamped with the
bench's clock as they appear (polled every 50 ms).

Everything runs against its own throwaway Postgres and tansu broker; every process is stopped by
its own PID (SIGCONT then SIGTERM, SIGKILL after a timeout), also on Ctrl-C, SIGTERM or an error,
and worker processes are SIGKILLed by the kernel if the bench itself dies. Results are printed as
Markdown and written to ``bench/results/scaling.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import hashlib
import itertools
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline  # noqa: I001  (sets up sys.path for the imports below)
import triggers

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.services import KafkaBroker, PostgresServer, free_port
from workers.config import KafkaSettings
from workers.db.engine import create_engine
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.runtime.kafka import Topics, ensure_topics

PARTITIONS = pipeline.PARTITIONS  # kafka.partitions / RW_KAFKA_PARTITIONS of every topic here: 12
STABLE_TIMEOUT_S = 90.0  # N processes starting on 2 cores, plus the joins
SETTLE_S = 0.5  # no assignment change for this long after the group looks stable
POLL_S = 0.05
RUN_TIMEOUT_S = 120.0
STALL_S = 15.0  # a run ends early when nothing progressed for this long
STOP_TIMEOUT_S = 30.0
# The workers' group settings here: frozen members must outlive a pre-load (~0.5 s for 30,000 events,
# several times that on a busy machine) without being evicted. tansu completes a join in about half
# the session timeout, so this also sets the rebalance figures (the service's default is 10,000 ms).
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
PRODUCE_CHUNK = 25_000  # messages produced per freeze in the scale-out run
THAW_S = 0.1  # scale-out: between two frozen chunks, long enough for the overdue heartbeat
NOISY_OTHER_CORES = 0.1  # a run is flagged noisy above this much CPU of other processes ...
NOISY_SPREAD = 1.2  # ... or when the rounds of one worker count differ by more than this factor
TAIL_SHARE = 0.9  # scale-out: the rate after is taken until this share of the backlog is written
BEFORE_S = 1.0  # scale-out: rate observed with one worker before the second starts
MACHINE = triggers.MACHINE
READY = re.compile(r"registry-workers worker ready on")
ASSIGNED = r"{kind} assigned partitions \[([0-9, ]*)\]"
PR_SET_PDEATHSIG = 1
STARTED = time.perf_counter()


# --------------------------------------------------------------------------------------------- processes


def _die_with_parent() -> Callable[[], None] | None:
    """``preexec_fn``: the kernel SIGKILLs the child if the bench dies (SIGTERM would wait while frozen)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Member:
    """One worker process of the group, as its log tells: when it was ready, each assignment it got."""

    process: subprocess.Popen[bytes]
    log_path: Path
    listen: str
    ready_at: float | None = None
    assignments: list[tuple[float, frozenset[int]]] = field(default_factory=list)
    _offset: int = 0
    _partial: bytes = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_log(self, assigned: re.Pattern[str]) -> None:
        """New complete lines since the last call, stamped with the bench's clock now."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        now = time.perf_counter()
        for line in lines:
            text = line.decode(errors="replace")
            if self.ready_at is None and READY.search(text):
                self.ready_at = now
            if match := assigned.search(text):
                parts = frozenset(int(p) for p in match.group(1).replace(",", " ").split())
                self.assignments.append((now, parts))


@dataclass(frozen=True)
class Formation:
    """How the group formed: launch → stable assignment, last member ready → stable, and generations."""

    launch_to_stable_s: float
    last_ready_to_stable_s: float
    generations: int
    partitions_per_member: tuple[int, ...]


class WorkerGroup:
    """``count`` ``registry-workers worker --kinds KIND`` processes in one consumer group.

    Each has its own ``RW_LISTEN`` and log; they run in their own session (a terminal's Ctrl-C
    reaches the bench, which stops them in order) and die with the bench.
    """

    def __init__(self, kind: str, count: int, env: dict[str, str], workdir: Path, name: str):
        self.kind = kind
        self._count = count
        self._env = env
        self._workdir = workdir
        self._name = name
        self._assigned = re.compile(ASSIGNED.format(kind=re.escape(kind)))
        self.members: list[Member] = []
        self.launched_at = 0.0

    def __enter__(self) -> WorkerGroup:
        try:
            self.launch(self._count)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def launch(self, count: int) -> None:
        """Start ``count`` more members (at once: the group forms as they join)."""
        self.launched_at = time.perf_counter()
        for _ in range(count):
            index = len(self.members) + 1
            env = {**self._env, "RW_LISTEN": f"127.0.0.1:{free_port()}"}
            log_path = self._workdir / f"{self._name}-{index}.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "workers", "worker", "--kinds", self.kind], env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=pipeline.REPO_ROOT,
                    start_new_session=True, preexec_fn=_die_with_parent(),
                )  # fmt: skip
            self.members.append(Member(process, log_path, env["RW_LISTEN"]))

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members]

    def poll_logs(self) -> None:
        for member in self.members:
            member.read_log(self._assigned)

    def check_alive(self) -> None:
        for member in self.members:
            if member.process.poll() is not None:
                tail = member.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {member.pid} exited with {member.process.returncode}:\n{tail}")

    def assignment_count(self) -> int:
        return sum(len(m.assignments) for m in self.members)

    def stable(self, partitions: frozenset[int]) -> bool:
        """Every member's latest assignment: disjoint, non-empty (up to one per partition), covering all."""
        if any(not m.assignments for m in self.members):
            return False
        latest = [m.assignments[-1][1] for m in self.members]
        disjoint = sum(len(parts) for parts in latest) == len(frozenset().union(*latest))
        enough = sum(1 for parts in latest if parts) == min(len(self.members), len(partitions))
        return disjoint and enough and frozenset().union(*latest) == partitions

    async def wait_stable(self, partitions: frozenset[int], timeout_s: float = STABLE_TIMEOUT_S) -> Formation:
        """Until the assignment is stable and unchanged for ``SETTLE_S``; raises ``TimeoutError``."""
        deadline = time.perf_counter() + timeout_s
        stable_since, seen = None, -1
        while time.perf_counter() < deadline:
            self.check_alive()
            self.poll_logs()
            if self.assignment_count() != seen:
                seen, stable_since = self.assignment_count(), None
                if self.stable(partitions):
                    stable_since = max(m.assignments[-1][0] for m in self.members)
            if stable_since is not None and time.perf_counter() - stable_since >= SETTLE_S:
                return self._formation(stable_since)
            await asyncio.sleep(POLL_S)
        latest = {m.pid: sorted(m.assignments[-1][1]) if m.assignments else None for m in self.members}
        raise TimeoutError(f"{self.kind} group not stable within {timeout_s:.0f} s; latest assignments {latest}")

    def _formation(self, stable_at: float) -> Formation:
        ready = [m.ready_at for m in self.members if m.ready_at is not None]
        return Formation(
            launch_to_stable_s=stable_at - self.launched_at,
            last_ready_to_stable_s=stable_at - max(ready) if ready else float("nan"),
            generations=max(len(m.assignments) for m in self.members),
            partitions_per_member=tuple(len(m.assignments[-1][1]) for m in self.members),
        )

    def _signal(self, sig: signal.Signals) -> None:
        for member in self.members:
            if member.process.poll() is None:
                os.kill(member.pid, sig)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP every member for the block; SIGCONT on the way out, whatever happens."""
        self._signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGCONT + SIGTERM to all at once (they drain and commit), then wait; SIGKILL stragglers."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for member in self.members:
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()


def make_messages(seed: int, repositories: int, count: int) -> tuple[list[pipeline.Message], str]:
    """``count`` realistic image events, encoded, and their mix; generated in chunks and copied to exact size.

    (``orjson.dumps`` returns a buffer with room to spare, ~8 KiB per event: 200,000 would take 1.6 GB.)
    """
    factory, messages, mix = pipeline.EventFactory(seed, repositories), [], Counter[str]()
    for start in range(0, count, PRODUCE_CHUNK):
        events = factory.events(min(PRODUCE_CHUNK, count - start))
        mix.update(f"{e.action.value} {e.kind.value}" for e in events)
        messages += [pipeline.Message(m.key, bytes(memoryview(m.value))) for m in pipeline.encode_messages(events)]
    return messages, ", ".join(f"{kind} {n / count:.0%}" for kind, n in mix.most_common())


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The workers' environment with this bench's group timing."""
    return {
        **env,
        "RW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "RW_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
    }


def partition_spread(messages: Sequence[pipeline.Message]) -> str:
    """Events per partition (the producer's key hash): the skew that leaves a member idle at the end."""
    partitioner, partitions = DefaultPartitioner(), list(range(PARTITIONS))
    sizes = Counter(partitioner(m.key, partitions, partitions) for m in messages)
    counts = [sizes.get(p, 0) for p in partitions]
    return f"{min(counts):,} to {max(counts):,} events per partition (mean {statistics.mean(counts):,.0f})"


class Preloader:
    """One producer (acks=all, as ``pipeline.produce``) kept open, so a freeze covers only the sends."""

    def __init__(self, kafka: KafkaSettings):
        self._topic = Topics.from_prefix(kafka.topic_prefix).image_events
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
            max_batch_size=256 * 1024,
        )  # fmt: skip

    async def __aenter__(self) -> Preloader:
        await self._producer.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._producer.stop()

    async def send(self, messages: Sequence[pipeline.Message]) -> float:
        """Produce ``messages`` and wait for every acknowledgement; returns messages per second."""
        started = time.perf_counter()
        pending = [
            await self._producer.send(self._topic, m.value, key=m.key, headers=pipeline.SCHEMA_HEADER) for m in messages
        ]
        await asyncio.gather(*pending)
        return len(messages) / (time.perf_counter() - started)


# --------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Run:
    """One measured run of one worker count.

    Steady: from the first progress seen (``first_count`` items then done) to the last, ``steady_s``;
    ``cpu`` holds CPU seconds per process name over that span. ``resumed_s``: thaw → last item.
    """

    series: str
    workers: int
    round: int
    expected: int
    done: int
    first_count: int
    steady_s: float
    resumed_s: float
    cpu: dict[str, float]
    formation: Formation
    reassignments: int  # assignment changes during the window (a rebalance there would distort it)
    produce_per_s: float
    batches: int = 0
    handled: int = 0
    handle_s: float = 0.0
    raw: pipeline.Rate | None = None
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return (self.done - self.first_count) / self.steady_s if self.steady_s > 0 else 0.0

    @property
    def resumed_rate(self) -> float:
        return self.done / self.resumed_s if self.resumed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.done >= self.expected

    def cores(self, name: str) -> float:
        return self.cpu.get(name, 0.0) / self.steady_s if self.steady_s > 0 else 0.0

    def us_per_item(self, name: str) -> float:
        steady_items = self.done - self.first_count
        return 1e6 * self.cpu.get(name, 0.0) / steady_items if steady_items > 0 else float("nan")

    @property
    def worker_names(self) -> list[str]:
        return [f"worker {i + 1}" for i in range(self.workers)]

    @property
    def workers_cpu_s(self) -> float:
        return sum(self.cpu.get(name, 0.0) for name in self.worker_names)

    @property
    def other_cores(self) -> float:
        """Cores the rest of the machine (not this bench's processes) kept busy over the steady span."""
        ours = sum(seconds for name, seconds in self.cpu.items() if name != MACHINE)
        return max(0.0, self.cores(MACHINE) - ours / self.steady_s) if self.steady_s > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        return self.handled / self.batches if self.batches else 0.0


@dataclass(frozen=True)
class ScaleOut:
    """One worker consuming a backlog, a second started once rows flow."""

    events: int
    rate_before: float
    rate_after: float
    launch_to_ready_s: float
    ready_to_stable_s: float
    longest_pause_s: float  # longest stretch without a new row, from the launch until the backlog ran out
    complete: bool


@dataclass
class Report:
    args: argparse.Namespace
    mix: str = ""
    spread: str = ""
    runs: list[Run] = field(default_factory=list)
    receiver_capacity: float = 0.0
    receiver_capacity_cpu: float = 0.0  # receiver's CPU per POST in that reference, µs
    scale_out: ScaleOut | None = None
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class Bench:
    """The bench's own services and scratch directory."""

    args: argparse.Namespace
    workdir: Path
    broker: KafkaBroker
    pg: PostgresServer

    def meter(self, group: WorkerGroup, extra: dict[str, Callable[[], float]] | None = None) -> pipeline.CpuMeter:
        postmaster = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        broker_pid = self.broker.pid or 0
        readers: dict[str, Callable[[], float]] = {
            f"worker {i + 1}": functools.partial(pipeline.process_cpu_s, pid) for i, pid in enumerate(group.pids)
        }
        readers.update({
            "Postgres": lambda: pipeline.tree_cpu_s(postmaster),
            "broker": lambda: pipeline.process_cpu_s(broker_pid),
            **(extra or {}),
            "bench": time.process_time,
            MACHINE: triggers.machine_busy_s,
        })  # fmt: skip
        return pipeline.CpuMeter(readers)


@dataclass(frozen=True)
class Window:
    """Counts polled every 50 ms: the steady part runs from the first progress to the final count.

    ``cpu`` covers the same span (the meter is started at the first progress), ``first_count`` is
    what was already done then (relative to the base), ``done`` the final count.
    """

    samples: list[tuple[float, int]]
    first_at: float
    first_count: int
    last_at: float
    done: int
    cpu: dict[str, float]
    reassigned: int  # assignment changes seen meanwhile


async def watch(
    read: Callable[[], Awaitable[int]], base: int, target: int, group: WorkerGroup,
    meter: pipeline.CpuMeter | None = None, timeout_s: float = RUN_TIMEOUT_S,
) -> Window:  # fmt: skip
    """Poll ``read`` until ``base + target``, the timeout or ``STALL_S`` without progress."""
    before = group.assignment_count()
    samples: list[tuple[float, int]] = []
    started = last_change = time.perf_counter()
    first: tuple[float, int] | None = None
    while True:
        count = await read()
        now = time.perf_counter()
        if first is None and count > base:
            first = (now, count - base)
            if meter is not None:
                meter.start()
        if not samples or count != samples[-1][1]:
            last_change = now
        samples.append((now, count))
        if count >= base + target or now - started > timeout_s or now - last_change > STALL_S:
            break
        group.check_alive()
        await asyncio.sleep(POLL_S)
    cpu = meter.read() if meter is not None and first is not None else {}
    group.poll_logs()
    final = samples[-1][1]
    last_at = next(t for t, c in samples if c == final)
    first_at, first_count = first or (last_at, 0)
    return Window(samples, first_at, first_count, last_at, final - base, cpu, group.assignment_count() - before)


async def inventory_run(bench: Bench, workers: int, round_: int, messages: Sequence[pipeline.Message]) -> Run:
    """N inventory workers drain a pre-loaded backlog into a fresh database."""
    name = f"inv_{workers}w_r{round_}"
    url = bench.pg.create_database(f"scale_{name}")
    await pipeline.migrate(url)
    kafka = pipeline.kafka_settings(bench.broker.bootstrap, f"bench-scale-{name}")
    await ensure_topics(kafka, kafka.bootstrap, Topics.from_prefix(kafka.topic_prefix))
    env = worker_env(pipeline.service_env(url, kafka.bootstrap, kafka.topic_prefix, bench.workdir))
    engine = create_engine(url, pool_size=1)
    try:
        with WorkerGroup("inventory", workers, env, bench.workdir, name) as group:
            formation = await group.wait_stable(frozenset(range(PARTITIONS)))
            async with Preloader(kafka) as preloader:
                with group.frozen():
                    produced = await preloader.send(messages)
                    thawed = time.perf_counter()
            count = functools.partial(pipeline.count_events, engine)
            window = await watch(count, 0, len(messages), group, bench.meter(group))
            stats = [await pipeline.scrape_stats(m.listen) for m in group.members]
    finally:
        await engine.dispose()
    raw = await pipeline.consume_raw(kafka, len(messages), pipeline.CpuMeter({"consumer": time.process_time}))
    return Run(
        series="inventory", workers=workers, round=round_, expected=len(messages), done=window.done,
        first_count=window.first_count, steady_s=window.last_at - window.first_at,
        resumed_s=window.last_at - thawed, cpu=window.cpu, formation=formation, reassignments=window.reassigned,
        produce_per_s=produced,
        batches=sum(s.batches for s in stats), handled=sum(s.consumed for s in stats),
        handle_s=sum(s.handle_s for s in stats), raw=raw,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- triggers


@dataclass
class TriggerSetup:
    """What every trigger run shares: the database with the policies, the receiver, the service env."""

    database_url: str
    receiver: triggers.ReceiverProcess
    env: dict[str, str]


def trigger_setup(bench: Bench, stack: contextlib.ExitStack) -> TriggerSetup:
    """Migrate, create ``--policies`` webhook policies through a short-lived ``api`` process, stop it."""
    url = bench.pg.create_database("scale_triggers")
    receiver = stack.enter_context(triggers.ReceiverProcess(bench.workdir / "receiver.log", bench.args.origins))
    env = triggers.service_env(url, bench.broker.bootstrap, bench.workdir, None)
    subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, check=True, cwd=pipeline.REPO_ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    with pipeline.start_service(["api"], env, bench.workdir, "api") as api:
        asyncio.run(pipeline.wait_ready(api))
        asyncio.run(triggers.create_policies(f"http://{api.listen}", receiver, bench.args.policies))
    return TriggerSetup(url, receiver, env)


def trigger_events(phase: str, count: int, policies: int) -> list[pipeline.Message]:
    """Tagged manifest pushes; event i goes to ``ns{i % policies}/app`` with tag ``{phase}-{i}``."""
    events = []
    for index in range(count):
        tag, namespace = f"{phase}-{index:06d}", f"ns{index % policies:03d}"
        events.append(ImageEvent(
            id=str(uuid.uuid4()), source=Source.DISTRIBUTION, region="region-a", action=Action.PUSH,
            kind=ArtifactKind.MANIFEST, name=f"{namespace}/app", namespace=namespace, repository="app", tag=tag,
            digest="sha256:" + hashlib.sha256(tag.encode()).hexdigest(), media_type=pipeline.MANIFEST_TYPE,
            size=396, occurred_at=datetime.now(UTC), actor="ci-bot",
        ))  # fmt: skip
    return pipeline.encode_messages(events)


async def trigger_run(bench: Bench, setup: TriggerSetup, workers: int, round_: int) -> Run:
    """N trigger workers match a pre-loaded backlog of pushes and deliver one webhook each."""
    name = f"trg_{workers}w_r{round_}"
    prefix = f"bench-scale-{name}"
    messages = trigger_events(name, bench.args.trigger_events, bench.args.policies)
    kafka = pipeline.kafka_settings(bench.broker.bootstrap, prefix)
    await ensure_topics(kafka, kafka.bootstrap, Topics.from_prefix(prefix))
    env = worker_env({**setup.env, "RW_KAFKA_TOPIC_PREFIX": prefix})
    receiver = setup.receiver
    async with aiohttp.ClientSession() as http:
        base = await receiver.count(http)
        with WorkerGroup("triggers", workers, env, bench.workdir, name) as group:
            formation = await group.wait_stable(frozenset(range(PARTITIONS)))
            meter = bench.meter(group, {"receiver": functools.partial(pipeline.process_cpu_s, receiver.pid)})
            async with Preloader(kafka) as preloader:
                with group.frozen():
                    produced = await preloader.send(messages)
                    thawed = time.perf_counter()
            window = await watch(functools.partial(receiver.count, http), base, len(messages), group, meter)
            await triggers.wait_settled(setup.database_url, triggers.SETTLE_TIMEOUT_S)
            flows = [await triggers.scrape_flows(m.listen) for m in group.members]
        arrivals = await receiver.arrivals(http)
    times = sorted(at for tag, (at, _) in arrivals.items() if tag.startswith(f"{name}-"))
    rows = await triggers.delivery_rows(setup.database_url)
    stats = [f.get("triggers", triggers.FlowStats()) for f in flows]
    return Run(
        series="triggers", workers=workers, round=round_, expected=len(messages), done=len(times),
        first_count=window.first_count, steady_s=window.last_at - window.first_at,
        resumed_s=window.last_at - thawed, cpu=window.cpu, formation=formation, reassignments=window.reassigned,
        produce_per_s=produced,
        batches=int(sum(s.batches for s in stats)), handled=int(sum(s.consumed for s in stats)),
        handle_s=sum(s.handle_s for s in stats),
        statuses=Counter(row.status for tag, row in rows.items() if tag.startswith(f"{name}-")),
    )  # fmt: skip


async def receiver_capacity(setup: TriggerSetup, count: int, inflight: int) -> tuple[float, float]:
    """The bench POSTs Harbor bodies straight at the receiver, ``inflight`` at a time.

    Returns (POSTs/s, receiver CPU µs per POST).
    """
    batch = triggers.harbor_bodies("capacity", count)
    pid = setup.receiver.pid
    before = pipeline.process_cpu_s(pid)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as http:
        started = time.perf_counter()
        sent = await pipeline.send_at_rate(http, f"{setup.receiver.url}/capacity", batch.bodies, 1e9, inflight)
        elapsed = time.perf_counter() - started
    ok = sum(1 for s in sent if s.status == 200)
    used = pipeline.process_cpu_s(pid) - before
    return ok / elapsed, 1e6 * used / ok if ok else float("nan")


# --------------------------------------------------------------------------------------------- scale-out


async def scale_out(bench: Bench, messages: Sequence[pipeline.Message]) -> ScaleOut:
    """One inventory worker drains a backlog; after ``BEFORE_S`` of observed flow a second process starts.

    The backlog is produced in chunks while the first worker is frozen (thawed for a heartbeat
    between chunks, so that it stays in the group), so the rate before the launch is one worker's.
    """
    url = bench.pg.create_database("scale_out")
    await pipeline.migrate(url)
    kafka = pipeline.kafka_settings(bench.broker.bootstrap, "bench-scale-out")
    await ensure_topics(kafka, kafka.bootstrap, Topics.from_prefix(kafka.topic_prefix))
    env = worker_env(pipeline.service_env(url, kafka.bootstrap, kafka.topic_prefix, bench.workdir))
    engine = create_engine(url, pool_size=1)
    try:
        with WorkerGroup("inventory", 1, env, bench.workdir, "scale-out") as group:
            await group.wait_stable(frozenset(range(PARTITIONS)))
            say(f"scale-out: producing {len(messages):,} events")
            async with Preloader(kafka) as preloader:
                for start in range(0, len(messages), PRODUCE_CHUNK):
                    with group.frozen():  # each chunk well within the session timeout
                        await preloader.send(messages[start : start + PRODUCE_CHUNK])
                    await asyncio.sleep(THAW_S)  # an overdue heartbeat goes out at once
            samples = await _rows_until_joined(engine, group)
            say("scale-out: two members stable; draining")
            rest = await watch(functools.partial(pipeline.count_events, engine), 0, len(messages), group)
            return _scale_out_figures(samples + rest.samples, group, len(messages))
    finally:
        await engine.dispose()


async def _rows_until_joined(engine: AsyncEngine, group: WorkerGroup) -> list[tuple[float, int]]:
    """Count rows; launch the second member after ``BEFORE_S``; return once the two-member group is stable."""
    samples: list[tuple[float, int]] = []
    observed_from = time.perf_counter()
    deadline = observed_from + STABLE_TIMEOUT_S
    while time.perf_counter() < deadline:
        samples.append((time.perf_counter(), await pipeline.count_events(engine)))
        if len(group.members) == 1 and samples[-1][0] - observed_from >= BEFORE_S:
            group.launch(1)
        group.check_alive()
        group.poll_logs()
        if len(group.members) == 2 and group.stable(frozenset(range(PARTITIONS))):
            return samples
        await asyncio.sleep(POLL_S)
    raise TimeoutError("the second worker did not join within the timeout")


def _rate(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, c) for t, c in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return float("nan")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _scale_out_figures(samples: list[tuple[float, int]], group: WorkerGroup, expected: int) -> ScaleOut:
    launched, second = group.launched_at, group.members[1]
    ready = second.ready_at or float("nan")
    stable = max(m.assignments[-1][0] for m in group.members)
    final = samples[-1][1]
    ran_out = next(t for t, c in samples if c == final)
    during = [(t, c) for t, c in samples if launched <= t <= ran_out]
    pauses, since = [0.0], during[0][0] if during else launched
    for (_, before), (at, count) in itertools.pairwise(during):
        if count != before:
            pauses.append(at - since)
            since = at
    # The last partitions drain unevenly (key skew): the rate after stops at TAIL_SHARE of the backlog.
    until = next((t for t, c in samples if c >= TAIL_SHARE * expected), ran_out)
    return ScaleOut(
        events=expected, rate_before=_rate(samples, samples[0][0], launched),
        rate_after=_rate(samples, stable, until),
        launch_to_ready_s=ready - launched, ready_to_stable_s=stable - ready, longest_pause_s=max(pauses),
        complete=final >= expected,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- report


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _median(runs: Sequence[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in runs)


def _by_workers(report: Report, series: str) -> dict[int, list[Run]]:
    grouped: dict[int, list[Run]] = {}
    for run in report.runs:
        if run.series == series:
            grouped.setdefault(run.workers, []).append(run)
    return dict(sorted(grouped.items()))


def _spread(runs: Sequence[Run]) -> str:
    if len(runs) < 2:
        return ""
    rates = [r.rate for r in runs]
    return f" ({_n(min(rates))} to {_n(max(rates))})"


def throughput_table(report: Report, series: str) -> list[str]:
    grouped = _by_workers(report, series)
    if not grouped:
        return []
    one = _median(grouped[min(grouped)], lambda r: r.rate)
    unit = "events/s" if series == "inventory" else "webhooks/s"
    reference = "raw consume (same topic)" if series == "inventory" else "direct POSTs to the receiver"
    receiver = ["receiver"] if series == "triggers" else []
    lines = [
        f"| Workers | Steady {unit} | From thaw | vs {min(grouped)} worker | vs {reference} | per worker process | "
        + " | ".join(["Workers CPU (cores)", "Postgres", "Broker", *(n.capitalize() for n in receiver), "Bench"])
        + f" | Whole machine (of {os.cpu_count()}) | Other processes |",
        "| ---: " * (12 + len(receiver)) + "|",
    ]
    for workers, runs in grouped.items():
        rate = _median(runs, lambda r: r.rate)
        if series == "inventory":
            ref = _median(runs, lambda r: r.raw.steady_per_s if r.raw else float("nan"))
        else:
            ref = report.receiver_capacity
        cores = [
            _median(runs, functools.partial(Run.cores, name=n)) for n in ("Postgres", "broker", *receiver, "bench")
        ]
        workers_cores = _median(runs, lambda r: r.workers_cpu_s / r.steady_s)
        machine = _median(runs, lambda r: r.cores(MACHINE))
        other = _median(runs, lambda r: r.other_cores)
        complete = "" if all(r.complete for r in runs) else " (INCOMPLETE)"
        lines.append(
            f"| {workers} | **{_n(rate)}**{_spread(runs)}{complete} | {_n(_median(runs, lambda r: r.resumed_rate))} | "
            f"{rate / one:.2f}x | {rate / ref:.1%} of {_n(ref)}/s | {_n(rate / workers)} | {workers_cores:.2f} | "
            + " | ".join(f"{c:.2f}" for c in cores)
            + f" | {machine:.2f} | {other:.2f} |"
        )
    return lines


def cost_table(report: Report, series: str) -> list[str]:
    """CPU per item, per process kind, and the batching the workers achieved."""
    grouped = _by_workers(report, series)
    if not grouped:
        return []
    unit = "event" if series == "inventory" else "webhook"
    names = ["Postgres", "broker", *(["receiver"] if series == "triggers" else [])]
    lines = [
        f"| Workers | Worker CPU per {unit} (→ {unit}s/s per worker core) | Postgres per {unit} (→ per Postgres "
        f"core) | Broker per {unit} | "
        + ("Receiver per webhook | " if series == "triggers" else "")
        + "Batches (mean size) | Mean `handle` | Worker CPU per process (cores) | Group formation | "
        "Last join → stable | Generations | Partitions per member | Reassigned during window |",
        "| ---: | ---: | ---: | ---: | "
        + ("---: | " if series == "triggers" else "")
        + "---: | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for workers, runs in grouped.items():
        run = runs[len(runs) // 2]  # the details of one representative run
        worker_us = _median(runs, lambda r: sum(r.us_per_item(n) for n in r.worker_names))
        per = [_median(runs, functools.partial(Run.us_per_item, name=n)) for n in names]
        per_process = ", ".join(f"{run.cores(n):.2f}" for n in run.worker_names)
        handle_ms = 1000 * run.handle_s / run.batches if run.batches else float("nan")
        form = run.formation
        lines.append(
            f"| {workers} | {_per_core(worker_us)} | {_per_core(per[0])} | "
            + " | ".join(f"{p:.0f} µs" for p in per[1:])
            + f" | {run.batches:,} ({run.mean_batch:.0f}) | {handle_ms:.0f} ms | {per_process} | "
            f"{form.launch_to_stable_s:.1f} s | {form.last_ready_to_stable_s:.1f} s | {form.generations} | "
            f"{'/'.join(map(str, form.partitions_per_member))} | {sum(r.reassignments for r in runs)} |"
        )
    return lines


def _per_core(us: float) -> str:
    return f"{us:.0f} µs ({_n(1e6 / us)}/s)" if us > 0 else "n/a"


def bottleneck_lines(report: Report, series: str) -> list[str]:
    """Where the time went, computed from the figures (no judgement beyond arithmetic)."""
    grouped = _by_workers(report, series)
    if not grouped:
        return []
    lines = []
    cores = os.cpu_count() or 1
    for workers, runs in grouped.items():
        machine = _median(runs, lambda r: r.cores(MACHINE))
        shares = {
            "workers": _median(runs, lambda r: r.workers_cpu_s / r.steady_s),
            **{
                n: _median(runs, functools.partial(Run.cores, name=n))
                for n in ("Postgres", "broker", "receiver", "bench")
            },
        }
        shares["other processes"] = _median(runs, lambda r: r.other_cores)
        top = sorted(((v, k) for k, v in shares.items() if v > 0), reverse=True)
        busiest = _median(runs, lambda r: max(r.cores(n) for n in r.worker_names))
        busy = f"machine busy {machine:.2f} of {cores} cores ({machine / cores:.0%})"
        lines.append(
            f"- {workers} worker(s): {busy}; "
            + ", ".join(f"{k} {v:.2f}" for v, k in top)
            + f"; busiest worker process {busiest:.2f} of its one core"
            + (" — **CPU-bound**" if machine >= 0.9 * cores else " — CPU left idle")
        )
    if series == "inventory":
        raw = statistics.median(r.raw.steady_per_s for runs in grouped.values() for r in runs if r.raw)
        best = max(_median(runs, lambda r: r.rate) for runs in grouped.values())
        broker = max(_median(runs, functools.partial(Run.cores, name="broker")) for runs in grouped.values())
        lines.append(
            f"- Kafka: the plain consumer read the same topics at {_n(raw)} msg/s (median), {raw / best:.1f} times "
            f"the best worker rate; the broker used at most {broker:.2f} of a core during the worker runs."
        )
    return lines


def scale_out_lines(report: Report) -> list[str]:
    s = report.scale_out
    if s is None:
        return []
    return [
        "| Scale-out 1 → 2 inventory workers while draining a backlog | Value |",
        "| --- | ---: |",
        f"| backlog | {_n(s.events)} events{'' if s.complete else ' (INCOMPLETE)'} |",
        f"| rate with 1 worker (before the launch) | {_n(s.rate_before)} events/s |",
        f"| second process: launch → ready (interpreter, imports, database, broker) | {s.launch_to_ready_s:.1f} s |",
        f"| second process ready → stable assignment (the rebalance) | {s.ready_to_stable_s:.1f} s |",
        f"| longest pause in row progress from the launch on | {s.longest_pause_s:.2f} s |",
        f"| rate with 2 workers (after the rebalance, until {TAIL_SHARE:.0%} of the backlog is written) | "
        f"{_n(s.rate_after)} events/s |",
    ]


def render(report: Report) -> str:
    args = report.args
    rounds = f"median of {args.rounds} rounds (range in brackets)" if args.rounds > 1 else "one round"
    lines = [
        f"## Scaling benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}; "
        "tansu broker (memory), Postgres with fsync off; load average before "
        f"{' / '.join(f'{v:.2f}' for v in report.load_before)}, after "
        f"{' / '.join(f'{v:.2f}' for v in report.load_after)}; total run time {report.elapsed_s:.0f} s.",
        f"Parameters: `--workers {args.workers} --events {args.events} --trigger-events {args.trigger_events} "
        f"--policies {args.policies} --origins {args.origins} --rounds {args.rounds}"
        f"{' --quick' if args.quick else ''}`; {PARTITIONS} partitions; each worker is its own "
        f"`registry-workers worker` process, all in one consumer group; {rounds}.",
        f"Inventory events: {report.mix}; {report.spread}.",
        "",
    ]
    if _by_workers(report, "inventory"):
        lines += [
            f"### Inventory: {_n(args.events)} image events → Postgres (`worker --kinds inventory`)",
            "",
            *throughput_table(report, "inventory"),
            "",
            *cost_table(report, "inventory"),
            "",
            *bottleneck_lines(report, "inventory"),
            "",
        ]
    if _by_workers(report, "triggers"):
        lines += [
            f"### Triggers: {_n(args.trigger_events)} pushes → one webhook each (`worker --kinds triggers`, "
            f"{args.policies} policies)",
            "",
            f"Reference: the bench POSTs the same Harbor bodies straight to the receiver, {TRIGGER_INFLIGHT} in "
            f"flight: {_n(report.receiver_capacity)}/s, {report.receiver_capacity_cpu:.0f} µs of receiver CPU each "
            "(one Python HTTP client process; the receiver itself could take more).",
            "",
            *throughput_table(report, "triggers"),
            "",
            *cost_table(report, "triggers"),
            "",
            *bottleneck_lines(report, "triggers"),
            "",
        ]
        statuses = Counter[str]()
        for run in report.runs:
            statuses.update(run.statuses)
        lines += [f"Delivery outcomes of the measured events: {dict(statuses.most_common())}.", ""]
    if report.scale_out is not None:
        lines += [*scale_out_lines(report), ""]
    lines += [*noise_lines(report), *notes()]
    return "\n".join(lines)


def noise_lines(report: Report) -> list[str]:
    """A warning computed from the run: CPU other processes took, and how far rounds disagreed."""
    if not report.runs:
        return []
    other = [r.other_cores for r in report.runs]
    spreads = [
        max(r.rate for r in runs) / min(r.rate for r in runs)
        for series in ("inventory", "triggers")
        for runs in _by_workers(report, series).values()
        if min(r.rate for r in runs) > 0
    ]
    worst_other, worst_spread = max(other), max(spreads, default=1.0)
    if worst_other < NOISY_OTHER_CORES and worst_spread < NOISY_SPREAD:
        return []
    return [
        f"**Noisy run:** processes outside this bench used up to {worst_other:.2f} cores during a measured window, "
        f"and the rounds of one worker count differed by up to {worst_spread:.2f}x. The machine was shared; rerun "
        "on a quiet machine before relying on the ratios (CPU per item varies less than the rates).",
        "",
    ]


def notes() -> list[str]:
    return [
        "How to read it: *steady* is first row (webhook) seen → last, polled every 50 ms; *from thaw* counts every "
        "item from the moment the frozen workers were resumed (the first batches in flight included). CPU columns "
        "are cores kept busy over the steady span (1.00 = one core), per item in µs of CPU over the same span. "
        "*Group formation* is process launch → "
        "stable assignment (interpreter start and imports included); *last join → stable* is the last member's "
        "`ready` log line → stable; *generations* the assignments the longest-lived member went through. "
        f"Session timeout {SESSION_TIMEOUT_MS} ms, heartbeat {HEARTBEAT_INTERVAL_MS} ms (tansu "
        "completes a join in about half the session timeout). *Other processes* is the whole machine minus this "
        "bench's processes: on a shared machine, a large value means the figures are noisy.",
        "",
    ]


# --------------------------------------------------------------------------------------------- main

TRIGGER_INFLIGHT = 16


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    parser.add_argument("--events", type=int, default=30_000, help="image events per inventory run")
    parser.add_argument("--trigger-events", type=int, default=5_000, help="pushes per trigger run (0: skip)")
    parser.add_argument("--scale-out-events", type=int, default=200_000, help="backlog of the scale-out run (0: skip)")
    parser.add_argument("--policies", type=int, default=100, help="webhook policies (one namespace each)")
    parser.add_argument("--origins", type=int, default=1, help="receiver ports the policies' targets spread over")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every worker count (median reported)")
    parser.add_argument("--repositories", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 workers, small backlogs")
    parser.add_argument("--output", type=Path, default=pipeline.RESULTS_DIR / "scaling.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.events, args.trigger_events, args.policies, args.rounds = "1,2", 5_000, 500, 10, 1
        args.scale_out_events = 0
    args.counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if not args.counts or not all(1 <= n <= PARTITIONS for n in args.counts):
        parser.error(f"--workers: counts between 1 and {PARTITIONS} (the partition count)")
    if args.events < 1000 or args.rounds < 1 or not 1 <= args.origins <= args.policies:
        parser.error("expected --events ≥ 1000, --rounds ≥ 1 and 1 ≤ --origins ≤ --policies")
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack, report: Report) -> None:
    bench = Bench(
        args=args,
        workdir=Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scaling-"))),
        broker=stack.enter_context(KafkaBroker()),
        pg=stack.enter_context(PostgresServer()),
    )
    messages, report.mix = make_messages(args.seed, args.repositories, args.events)
    report.spread = partition_spread(messages)
    for round_ in range(1, args.rounds + 1):
        order = args.counts if round_ % 2 else list(reversed(args.counts))  # alternate against drift
        for workers in order:
            result = asyncio.run(inventory_run(bench, workers, round_, messages))
            report.runs.append(result)
            _progress(result)
    if args.trigger_events > 0:
        setup = trigger_setup(bench, stack)
        report.receiver_capacity, report.receiver_capacity_cpu = asyncio.run(
            receiver_capacity(setup, min(args.trigger_events, 5000), TRIGGER_INFLIGHT)
        )
        for round_ in range(1, args.rounds + 1):
            order = args.counts if round_ % 2 else list(reversed(args.counts))
            for workers in order:
                result = asyncio.run(trigger_run(bench, setup, workers, round_))
                report.runs.append(result)
                _progress(result)
    if args.scale_out_events > 0:
        say(f"scale-out: generating {args.scale_out_events:,} events")
        backlog, _ = make_messages(args.seed + 1, args.repositories, args.scale_out_events)
        report.scale_out = asyncio.run(scale_out(bench, backlog))
        say(f"scale-out: longest pause {report.scale_out.longest_pause_s:.2f} s")


def say(message: str) -> None:
    """Progress on stderr, with the time since the start."""
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr)


def _progress(result: Run) -> None:
    say(
        f"{result.series} x{result.workers} (round {result.round}): {result.rate:,.0f}/s steady, "
        f"{result.done}/{result.expected}, machine {result.cores(MACHINE):.2f} cores, "
        f"formation {result.formation.launch_to_stable_s:.1f} s"
    )


def _interrupt(signum: int, _frame: object) -> None:
    """SIGINT and SIGTERM raise here, wherever the bench is, and the ExitStacks stop every process by PID.

    (``asyncio.run``'s own SIGINT handler only cancels the main task, and a client library that
    swallows the cancellation would let the run go on.)
    """
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    report = Report(args, load_before=os.getloadavg())
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        run(args, stack, report)
    report.load_after, report.elapsed_s = os.getloadavg(), time.perf_counter() - started
    text = render(report)
    print(text)
    args.output.write_text(text)
    print(f"total run time: {report.elapsed_s:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
