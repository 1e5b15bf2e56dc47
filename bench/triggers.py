"""Registry notification → webhook received by a local receiver: latency at a fixed rate, N policies configured.

    python bench/triggers.py [--rate 500] [--duration 20] [--policies 100] [--inflight 64]
                             [--origins 1] [--lane-limit N] [--profile] [--output PATH]

The issue's goal: p50 < 20 ms and p99 < 100 ms at 500 events/s with 100 triggers configured,
on a 2-core machine.

Set-up: a throwaway Postgres and tansu broker (``tests.support.services``), ONE
``registry-workers up`` subprocess (ingress, API and every worker kind, as deployed), and a
webhook receiver in its own small process (sharing the sender's event loop would delay both:
on 2 cores, a receiver starved by the sender's bursts would measure the bench, not the service).
``--policies`` webhook policies are created through the signed API, one per namespace
``ns000..``, event ``PUSH_ARTIFACT``, each targeting ``RECEIVER/hook/NNN``. All targets share
one origin, hence one of the deliverer's per-target lanes (``triggers.concurrency_per_target``,
default 4); ``--origins K`` spreads them over K receiver ports (K lanes), as K receivers would.

Run: join (a few events, waited for), warm-up (``WARMUP_S`` at the target rate, not measured),
then one Distribution push notification per POST at ``--rate`` for ``--duration`` s, at most
``--inflight`` pending; event i is pushed to ``ns{i % policies}/app`` with a unique tag, so it
matches exactly one policy. Latency = the receiver's ``time.time()`` at arrival minus the bench's
``time.time()`` before the POST (same machine clock), matched by the tag in the Harbor body
(``event_data.resources[0].tag``).

Reference, same run: the bench POSTs a Harbor body of the same size straight to the receiver at
the same rate (``FLOOR_DURATION_S``): the floor of HTTP on this machine. The deliveries table
splits each event's latency at ``created_at`` (when the matcher recorded it). ``--profile``
samples the service with py-spy during the measured window (summary in the results file).

Everything is stopped by its own PID. Results are printed as Markdown and written to
``bench/results/triggers.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline  # noqa: I001  (sets up sys.path for the imports below)

import aiohttp
import orjson
import yaml
from aiohttp import web
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from pipeline import Sent, percentile, send_at_rate
from tests.support.service import ADMIN_AK, ADMIN_SK
from tests.support.services import KafkaBroker, PostgresServer, free_port
from tests.support.swr_http import signed
from workers.db.engine import create_engine
from workers.db.models import Delivery
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.triggers.payloads import encode_payload, harbor_payload

GOAL_P50_MS = 20.0
GOAL_P99_MS = 100.0
WARMUP_S = 2.0
JOIN_EVENTS = 5
FLOOR_DURATION_S = 5.0
IDLE_S = 2.0
JOIN_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 30.0
STALL_S = 10.0  # stop waiting for deliveries when none arrived for this long
SETTLE_TIMEOUT_S = 30.0
REGISTRY = "http://127.0.0.1:5000"
DELIVERIES = Delivery.__table__
MACHINE = "whole machine"
SERVICE = "service (`up`)"


# --------------------------------------------------------------------------------------------- receiver


class ArrivalLog:
    """The receiver (in its own process): answers 200 at once and keeps each POST's arrival time."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, bytes]] = []

    async def record(self, request: web.Request) -> web.Response:
        at = time.time()
        self.arrivals.append((at, request.path, await request.read()))
        return web.Response(text="ok")

    async def count(self, _request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.arrivals)})

    async def dump(self, _request: web.Request) -> web.Response:
        """``[[arrival, path, tag], ...]``; bodies are parsed only here, after the run."""
        rows = [[at, path, _tag_of(body)] for at, path, body in self.arrivals]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")


def _tag_of(body: bytes) -> str | None:
    try:
        return str(orjson.loads(body)["event_data"]["resources"][0]["tag"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


def serve_receiver(ports: Sequence[int]) -> None:
    """Runs until SIGTERM (``web.run_app`` handles it): the ``--serve-receiver`` mode of this script.

    Every port is one more origin, hence one more lane (concurrency limit, breaker) in the deliverer.
    """
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sockets.append(sock)
    arrivals = ArrivalLog()
    app = web.Application()
    app.router.add_get("/_count", arrivals.count)
    app.router.add_get("/_arrivals", arrivals.dump)
    app.router.add_post("/{tail:.*}", arrivals.record)
    web.run_app(app, sock=sockets, access_log=None, print=None)


class ReceiverProcess:
    """``python bench/triggers.py --serve-receiver PORT,...``, stopped by its own PID."""

    def __init__(self, log_path: Path, origins: int = 1):
        self.ports = [free_port() for _ in range(origins)]
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.origin(0)

    def origin(self, index: int) -> str:
        """The receiver's ``index``-th origin (modulo their number)."""
        return f"http://127.0.0.1:{self.ports[index % len(self.ports)]}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> ReceiverProcess:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", ",".join(map(str, self.ports))]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {self._proc.returncode}:\n{self.log_path.read_text()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/_count", timeout=1),
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"receiver not ready within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def count(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.url}/_count") as resp:
            return int((await resp.json())["count"])

    async def arrivals(self, http: aiohttp.ClientSession) -> dict[str, tuple[float, str]]:
        """``tag → (first arrival, path)``."""
        async with http.get(f"{self.url}/_arrivals") as resp:
            rows = orjson.loads(await resp.read())
        found: dict[str, tuple[float, str]] = {}
        for at, path, tag in rows:
            if tag is not None and tag not in found:
                found[tag] = (float(at), str(path))
        return found


# --------------------------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Batch:
    """Notifications to send: ``(event_id, body)`` and, per event id, its tag and expected path."""

    bodies: list[tuple[str, bytes]]
    tags: dict[str, str]
    paths: dict[str, str]


def push_notifications(template: dict[str, Any], phase: str, count: int, policies: int) -> Batch:
    """Distribution push-manifest notifications, one event each; event i goes to namespace i % policies."""
    bodies, tags, paths = [], {}, {}
    for index in range(count):
        event = copy.deepcopy(template)
        event_id, tag, namespace = str(uuid.uuid4()), f"{phase}-{index:06d}", index % policies
        repository = f"ns{namespace:03d}/app"
        digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        event["target"].update(repository=repository, digest=digest, tag=tag,
                               url=f"{REGISTRY}/v2/{repository}/manifests/{digest}")  # fmt: skip
        event.update(id=event_id, timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        event["request"]["id"] = str(uuid.uuid4())
        bodies.append((event_id, orjson.dumps({"events": [event]})))
        tags[event_id], paths[event_id] = tag, f"/hook/{namespace:03d}"
    return Batch(bodies, tags, paths)


def harbor_bodies(phase: str, count: int) -> Batch:
    """Harbor webhook bodies as the service builds them (same size), for the direct-POST floor."""
    bodies, tags = [], {}
    for index in range(count):
        tag = f"{phase}-{index:06d}"
        event = ImageEvent(
            id=str(uuid.uuid4()), source=Source.DISTRIBUTION, region="region-a", action=Action.PUSH,
            kind=ArtifactKind.MANIFEST, name="ns000/app", namespace="ns000", repository="app", tag=tag,
            digest="sha256:" + hashlib.sha256(tag.encode()).hexdigest(), media_type=pipeline.MANIFEST_TYPE,
            size=396, occurred_at=datetime.now(UTC), actor="ci-bot",
        )  # fmt: skip
        bodies.append((event.id, encode_payload(harbor_payload(event, registry_host=REGISTRY))))
        tags[event.id] = tag
    return Batch(bodies, tags, {})


def policy_body(index: int, origin: str) -> dict[str, Any]:
    return {
        "name": f"bench-{index:03d}",
        "description": "bench/triggers.py",
        "targets": [{"type": "http", "address": f"{origin}/hook/{index:03d}", "auth_header": "",
                     "skip_cert_verify": False, "address_type": "internet"}],
        "event_types": ["PUSH_ARTIFACT"],
        "scope_rules": [{
            "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}],
            "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]},
        }],
        "enabled": True,
    }  # fmt: skip


async def create_policies(service_url: str, receiver: ReceiverProcess, count: int) -> None:
    """One policy per namespace ``ns000..``, through the signed API (the admin AK/SK of the tests).

    Policy i targets the receiver's origin i (modulo ``--origins``), path ``/hook/NNN``.
    """
    for index in range(count):
        path = f"/v2/default/instances/local/namespaces/ns{index:03d}/webhook/policies"
        status, answer = await signed(service_url, "POST", path, policy_body(index, receiver.origin(index)))
        if status != 201:
            raise RuntimeError(f"creating policy {index}: HTTP {status}: {answer}")


async def wait_delivered(
    receiver: ReceiverProcess, http: aiohttp.ClientSession, expected: int, up: pipeline.ServiceProcess,
    timeout_s: float = DELIVERY_TIMEOUT_S,
) -> int:  # fmt: skip
    """Poll the receiver's count until ``expected``, the timeout, or ``STALL_S`` without progress."""
    deadline, last, last_change = time.monotonic() + timeout_s, -1, time.monotonic()
    while True:
        up.check_alive()
        count = await receiver.count(http)
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        if count >= expected or now > deadline or now - last_change > STALL_S:
            return count
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Outcome:
    """One sending phase, matched with the receiver's arrivals (and the service's deliveries rows)."""

    sent: int
    accepted: int
    delivered: int
    misrouted: int
    achieved_rate: float
    received_rate: float  # delivered / (last arrival - first send)
    latency_ms: list[float]
    http_ms: list[float]
    recorded_ms: list[float] = field(default_factory=list)  # send → delivery row created
    to_receiver_ms: list[float] = field(default_factory=list)  # delivery row created → arrival
    service_http_ms: list[float] = field(default_factory=list)  # the service's own POST round trip

    @property
    def missing(self) -> int:
        return self.accepted - self.delivered


def match(sent: Sequence[Sent], batch: Batch, arrivals: dict[str, tuple[float, str]], ok: int) -> Outcome:
    """Latency of every POST answered ``ok`` whose tag reached the receiver."""
    accepted = [s for s in sent if s.status == ok]
    found = [(s, arrivals[batch.tags[s.event_id]]) for s in accepted if batch.tags[s.event_id] in arrivals]
    span = sent[-1].sent_at - sent[0].sent_at if len(sent) > 1 else 0.0
    until_last = max((at for _, (at, _) in found), default=0.0) - sent[0].sent_at if sent else 0.0
    return Outcome(
        sent=len(sent), accepted=len(accepted), delivered=len(found),
        misrouted=sum(1 for s, (_, path) in found if batch.paths and path != batch.paths[s.event_id]),
        achieved_rate=(len(sent) - 1) / span if span else 0.0,
        received_rate=len(found) / until_last if until_last > 0 else 0.0,
        latency_ms=[1000 * (at - s.sent_at) for s, (at, _) in found],
        http_ms=[1000 * s.http_s for s in accepted],
    )  # fmt: skip


@dataclass(frozen=True)
class DeliveryRow:
    created_at: float
    latency_ms: int | None
    attempts: int
    status: str


async def delivery_rows(database_url: str) -> dict[str, DeliveryRow]:
    """``tag → row`` of every webhook delivery the service recorded."""
    engine = create_engine(database_url, pool_size=1)
    columns = (DELIVERIES.c.tag, DELIVERIES.c.created_at, DELIVERIES.c.latency_ms, DELIVERIES.c.attempts,
               DELIVERIES.c.status)  # fmt: skip
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(*columns).where(DELIVERIES.c.kind == "webhook"))
            return {
                tag: DeliveryRow(created.astimezone(UTC).timestamp(), latency, attempts, status)
                for tag, created, latency, attempts, status in rows
            }
    finally:
        await engine.dispose()


async def wait_settled(database_url: str, timeout_s: float) -> int:
    """Poll until no webhook delivery is pending or running (every outcome written); returns how many still are.

    The deliverer may write outcomes after the POST, so an arrival does not mean the work is done.
    """
    engine = create_engine(database_url, pool_size=1)
    unfinished = select(func.count()).where(
        DELIVERIES.c.kind == "webhook", DELIVERIES.c.status.in_(("pending", "running"))
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with engine.connect() as connection:
                count = int((await connection.execute(unfinished)).scalar_one())
            if not count or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


def with_stages(outcome: Outcome, sent: Sequence[Sent], batch: Batch, arrivals: dict[str, tuple[float, str]],
                rows: dict[str, DeliveryRow]) -> Outcome:  # fmt: skip
    """Split each delivered event's latency at the delivery row's ``created_at``."""
    recorded, to_receiver, service_http = [], [], []
    for s in sent:
        tag = batch.tags[s.event_id]
        if s.status != 202 or tag not in arrivals or tag not in rows:
            continue
        row = rows[tag]
        recorded.append(1000 * (row.created_at - s.sent_at))
        to_receiver.append(1000 * (arrivals[tag][0] - row.created_at))
        if row.latency_ms is not None:
            service_http.append(float(row.latency_ms))
    return Outcome(**{**outcome.__dict__, "recorded_ms": recorded, "to_receiver_ms": to_receiver,
                      "service_http_ms": service_http})  # fmt: skip


@dataclass(frozen=True)
class FlowStats:
    """A worker kind's counters from ``/metrics`` (differences of two scrapes)."""

    batches: float = 0.0
    handle_s: float = 0.0
    consumed: float = 0.0
    latency_s: float = 0.0
    latency_count: float = 0.0

    def minus(self, before: FlowStats) -> FlowStats:
        return FlowStats(*(a - b for a, b in zip(self.__dict__.values(), before.__dict__.values(), strict=True)))

    def describe(self) -> str:
        per_batch = self.consumed / self.batches if self.batches else 0.0
        handle_ms = 1000 * self.handle_s / self.batches if self.batches else 0.0
        broker_to_done = 1000 * self.latency_s / self.latency_count if self.latency_count else 0.0
        return (f"{self.batches:,.0f} batches of {per_batch:.1f} events, {handle_ms:.1f} ms each in `handle`; "
                f"broker timestamp → batch done {broker_to_done:.0f} ms on average")  # fmt: skip


async def scrape_flows(listen: str) -> dict[str, FlowStats]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{listen}/metrics") as resp:
        text = await resp.text()
    values: dict[tuple[str, str], float] = {}
    kinds: list[str] = []  # every worker kind the process runs, in the order /metrics lists them
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.labels.get("kind", "")
            values[(sample.name, kind)] = sample.value
            if sample.name == "rw_events_consumed_total" and kind not in kinds:
                kinds.append(kind)
    return {
        kind: FlowStats(
            batches=values.get(("rw_batch_processing_seconds_count", kind), 0.0),
            handle_s=values.get(("rw_batch_processing_seconds_sum", kind), 0.0),
            consumed=values.get(("rw_events_consumed_total", kind), 0.0),
            latency_s=values.get(("rw_event_latency_seconds_sum", kind), 0.0),
            latency_count=values.get(("rw_event_latency_seconds_count", kind), 0.0),
        )
        for kind in kinds
    }


# --------------------------------------------------------------------------------------------- run


@dataclass
class Report:
    args: argparse.Namespace
    setup_s: float = 0.0
    main: Outcome | None = None
    floor: Outcome | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    flows: dict[str, FlowStats] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # cores kept busy in the measured window
    idle_service: float = 0.0  # cores the service uses with no traffic
    unsettled: int = 0  # deliveries still pending or running when the window closed
    window_s: float = 0.0  # the measured window: first send until the last delivery (or the wait's end)
    profile: str = ""


def service_env(database_url: str, bootstrap: str, workdir: Path, lane_limit: int | None) -> dict[str, str]:
    """``pipeline.service_env`` plus what webhooks need: a registry host, 127.0.0.0/8 allowed, a secret key.

    ``lane_limit``: ``triggers.concurrency_per_target`` (None: the service's default).
    """
    document: dict[str, Any] = {"regions": {"region-a": {"registry": REGISTRY}}}
    if lane_limit is not None:
        document["triggers"] = {"concurrency_per_target": lane_limit}
    config = workdir / "triggers-bench.yaml"
    config.write_text(yaml.safe_dump(document))
    env = pipeline.service_env(database_url, bootstrap, "bench-triggers", workdir)
    env.update({
        "RW_CONFIG": str(config),
        "RW_REGION": "region-a",
        "RW_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "RW_SECRET_KEYS": Fernet.generate_key().decode(),  # nothing is written under the repository
        "RW_ADMIN_ACCESS_KEY": ADMIN_AK,
        "RW_ADMIN_SECRET_KEY": ADMIN_SK,
    })  # fmt: skip
    return env


def cpu_meter(up: pipeline.ServiceProcess, receiver: ReceiverProcess, pg: PostgresServer,
              broker: KafkaBroker, extra: Sequence[pipeline.ServiceProcess] = ()) -> pipeline.CpuMeter:  # fmt: skip
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    broker_pid = broker.pid or 0
    services = [up, *extra]
    names = ("api", "worker", "worker 2", "worker 3")[: len(services)] if extra else ()
    parts = {f"  of which {name}": (lambda pid=service.pid: pipeline.process_cpu_s(pid))
             for name, service in zip(names, services, strict=False)}  # fmt: skip
    return pipeline.CpuMeter({
        SERVICE: lambda: sum(pipeline.process_cpu_s(service.pid) for service in services),
        **parts,
        "Postgres": lambda: pipeline.tree_cpu_s(postmaster),
        "broker": lambda: pipeline.process_cpu_s(broker_pid),
        "receiver": lambda: pipeline.process_cpu_s(receiver.pid),
        "bench (sender)": time.process_time,
        MACHINE: machine_busy_s,
    })  # fmt: skip


def machine_busy_s() -> float:
    """CPU seconds all processes on this machine spent busy (``/proc/stat``), to see other load."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / pipeline.CLOCK_TICKS


class WindowSampler:
    """py-spy sampling the running service between ``attach`` and ``finish``; a no-op without ``output``.

    ``pipeline.Sampler`` waits for the sampled process to exit; the service outlives the window,
    so this one stops py-spy with SIGINT (its Ctrl-C), on which it writes the stacks.
    """

    def __init__(self, output: Path | None):
        self.output = output
        self._proc: subprocess.Popen[bytes] | None = None

    def attach(self, pid: int) -> None:
        if self.output is None or self._proc is not None:
            return
        cmd = ["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
               "--output", str(self.output)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip

    def finish(self, timeout_s: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Running:
    up: pipeline.ServiceProcess
    receiver: ReceiverProcess
    meter: pipeline.CpuMeter
    sampler: WindowSampler
    database_url: str
    metrics_listen: str = ""  # the process whose /metrics has the consumers (the worker when split)
    profile_pid: int = 0  # the process --profile samples (the worker when split)


async def measure(args: argparse.Namespace, running: Running, report: Report) -> None:
    """Set up the policies, join and warm up, then the measured run and the direct-POST floor."""
    up, receiver = running.up, running.receiver
    started = time.perf_counter()
    await pipeline.wait_ready(up)
    await create_policies(f"http://{up.listen}", receiver, args.policies)
    report.setup_s = time.perf_counter() - started
    print(f"service ready, {args.policies} policies created in {report.setup_s:.1f} s", file=sys.stderr)
    template = orjson.loads(pipeline.ENVELOPE_EXAMPLE.read_bytes())["events"][0]
    measured = push_notifications(template, "bench", int(args.rate * args.duration), args.policies)
    floor = harbor_bodies("floor", int(args.rate * FLOOR_DURATION_S))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.inflight)) as http:
        expected = await warm_up(http, running, template, args, report)
        sent = await measured_run(http, running, measured, args, report, expected)
        expected += sum(1 for s in sent if s.status == 202)
        floor_sent = await send_at_rate(http, f"{receiver.url}/floor", floor.bodies, args.rate, args.inflight)
        await wait_delivered(receiver, http, expected + len(floor_sent), up)
        arrivals = await receiver.arrivals(http)
    rows = await delivery_rows(running.database_url)
    report.statuses = Counter(rows[tag].status for tag in measured.tags.values() if tag in rows)
    report.main = with_stages(match(sent, measured, arrivals, 202), sent, measured, arrivals, rows)
    report.floor = match(floor_sent, floor, arrivals, 200)


async def warm_up(
    http: aiohttp.ClientSession, running: Running, template: dict[str, Any], args: argparse.Namespace,
    report: Report,
) -> int:  # fmt: skip
    """A few events until the consumer groups have joined, the idle CPU, then ``WARMUP_S`` at the target rate.

    Returns how many webhooks the receiver has then seen (every outcome written).
    """
    up, receiver, ingress = running.up, running.receiver, f"http://{running.up.listen}/events/distribution"
    join = push_notifications(template, "join", JOIN_EVENTS, args.policies)
    expected = await send_phase(http, ingress, join, 20.0, args.inflight, 0)
    if await wait_delivered(receiver, http, expected, up, JOIN_TIMEOUT_S) < expected:
        raise RuntimeError(f"join events not delivered within {JOIN_TIMEOUT_S:.0f} s; see {up.log_path}")
    await wait_settled(running.database_url, SETTLE_TIMEOUT_S)
    report.idle_service = await idle_share(up)
    warmup = push_notifications(template, "warm", int(args.rate * WARMUP_S), args.policies)
    expected = await send_phase(http, ingress, warmup, args.rate, args.inflight, expected)
    delivered = await wait_delivered(receiver, http, expected, up)
    await wait_settled(running.database_url, SETTLE_TIMEOUT_S)
    return delivered


async def measured_run(
    http: aiohttp.ClientSession, running: Running, batch: Batch, args: argparse.Namespace, report: Report,
    expected: int,
) -> list[Sent]:  # fmt: skip
    """Send ``batch`` at the target rate, wait until its webhooks arrived and their outcomes are written.

    CPU and ``/metrics`` cover that window. The wait for arrivals is bounded by ``DELIVERY_TIMEOUT_S``
    plus three times the run (a backlog drains slowly) and ends early after ``STALL_S`` without any;
    the wait for outcomes by ``SETTLE_TIMEOUT_S``.
    """
    up = running.up
    flows_before = await scrape_flows(running.metrics_listen or up.listen)
    running.meter.start()
    window = time.perf_counter()
    running.sampler.attach(running.profile_pid or up.pid)
    sent = await send_at_rate(http, f"http://{up.listen}/events/distribution", batch.bodies, args.rate, args.inflight)
    expected += sum(1 for s in sent if s.status == 202)
    await wait_delivered(running.receiver, http, expected, up, DELIVERY_TIMEOUT_S + 3 * args.duration)
    report.unsettled = await wait_settled(running.database_url, SETTLE_TIMEOUT_S)
    report.window_s = time.perf_counter() - window
    report.cpu = {name: used / report.window_s for name, used in running.meter.read().items()}
    after = await scrape_flows(running.metrics_listen or up.listen)
    report.flows = {kind: stats.minus(flows_before.get(kind, FlowStats())) for kind, stats in after.items()}
    running.sampler.finish()
    return sent


async def idle_share(up: pipeline.ServiceProcess) -> float:
    """Cores the service keeps busy with no traffic (its pollers), over ``IDLE_S``."""
    before, started = pipeline.process_cpu_s(up.pid), time.perf_counter()
    await asyncio.sleep(IDLE_S)
    return (pipeline.process_cpu_s(up.pid) - before) / (time.perf_counter() - started)


async def send_phase(
    http: aiohttp.ClientSession, url: str, batch: Batch, rate: float, inflight: int, expected: int
) -> int:
    """Send an unmeasured phase; returns how many deliveries the receiver should then have seen."""
    sent = await send_at_rate(http, url, batch.bodies, rate, inflight)
    return expected + sum(1 for s in sent if s.status == 202)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> Report:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-triggers-")))
    broker = stack.enter_context(KafkaBroker())
    pg = stack.enter_context(PostgresServer())
    database_url = pg.create_database("triggers")
    receiver = stack.enter_context(ReceiverProcess(workdir / "receiver.log", args.origins))
    env = service_env(database_url, broker.bootstrap, workdir, args.lane_limit)
    env.update(setting.split("=", 1) for setting in args.set)
    extra: list[pipeline.ServiceProcess] = []
    if args.split:  # the production layout: ingress/API and workers in their own processes
        subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, check=True, cwd=pipeline.REPO_ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        up = stack.enter_context(pipeline.start_service(["api"], env, workdir, "api"))
        worker_env = {**env, "RW_LISTEN": f"127.0.0.1:{free_port()}"}
        extra.append(
            stack.enter_context(
                pipeline.start_service(
                    ["worker", *os.environ.get("BENCH_KINDS", "").split()], worker_env, workdir, "worker"
                )
            )
        )
    else:
        up = stack.enter_context(pipeline.start_service(["up"], env, workdir, "up"))
    sampler = WindowSampler(profile_path(args, workdir))
    stack.callback(sampler.finish)
    report = Report(args)
    running = Running(up, receiver, cpu_meter(up, receiver, pg, broker, extra), sampler, database_url,
                      metrics_listen=extra[0].listen if extra else up.listen,
                      profile_pid=extra[0].pid if extra else up.pid)  # fmt: skip
    asyncio.run(measure(args, running, report))
    if sampler.output is not None and sampler.output.exists():
        summary = pipeline.summarise_profile(sampler.output)
        summary = "".join(ch for ch in summary if ch.isprintable() or ch == "\n")  # torn samples: NUL names
        report.profile = summary.replace("of the steady worker path", "of the `up` process in the measured window")
    return report


def service_shape(args: argparse.Namespace) -> str:
    if not args.split:
        return "one `registry-workers up` process"
    kinds = f"`worker --kinds {args.kinds}`" if args.kinds else "`worker` (every kind, one consumer group)"
    return f"one `registry-workers api` and one {kinds} process"


def worker_kinds(args: argparse.Namespace) -> list[str]:
    return ["--kinds", args.kinds] if args.kinds else []


def profile_path(args: argparse.Namespace, workdir: Path) -> Path | None:
    if not args.profile:
        return None
    if shutil.which("py-spy") is None:
        print("--profile: py-spy is not installed; running without it", file=sys.stderr)
        return None
    return pipeline.RESULTS_DIR / "triggers-profile.folded" if args.keep_profile else workdir / "up-profile.folded"


# --------------------------------------------------------------------------------------------- report


def _percentiles(values: Sequence[float]) -> str:
    return " | ".join(f"{percentile(values, p):.1f} ms" for p in (50, 90, 99, 100))


def _verdict(name: str, value: float, goal: float) -> str:
    if value < goal:
        return f"- {name} = {value:.1f} ms, goal < {goal:.0f} ms: **met**"
    return f"- {name} = {value:.1f} ms, goal < {goal:.0f} ms: **NOT met** ({value / goal:.1f} times the goal)"


def results_table(report: Report) -> list[str]:
    main, floor, args = report.main, report.floor, report.args
    assert main is not None and floor is not None
    counts = f"{main.sent:,} | {main.accepted:,} | {main.delivered:,} | {main.missing:,}"
    floor_counts = f"{floor.sent:,} | {floor.accepted:,} (200) | {floor.delivered:,} | {floor.missing:,}"
    return [
        "| Measurement | Sent | Accepted | Delivered | Missing | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| **notification → webhook received** ({args.rate:g}/s for {args.duration:g} s, achieved "
        f"{main.achieved_rate:.1f}/s) | {counts} | {_percentiles(main.latency_ms)} |",
        f"| ingress HTTP 202 answer | {counts} | {_percentiles(main.http_ms)} |",
        f"| reference: bench → receiver direct POST, send → arrival ({args.rate:g}/s for {FLOOR_DURATION_S:g} s, "
        f"achieved {floor.achieved_rate:.1f}/s) | {floor_counts} | {_percentiles(floor.latency_ms)} |",
        f"| reference: bench → receiver direct POST, round trip | {floor_counts} | {_percentiles(floor.http_ms)} |",
    ]


def stages_table(main: Outcome) -> list[str]:
    return [
        "| Stage (from the `deliveries` rows) | p50 | p90 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| send → delivery recorded (`created_at`: ingress, Kafka, matcher) | {_percentiles(main.recorded_ms)} |",
        f"| delivery recorded → received (claim, policy read, signing, POST) | {_percentiles(main.to_receiver_ms)} |",
        f"| the service's POST round trip (`latency_ms`, whole ms) | {_percentiles(main.service_http_ms)} |",
    ]


def setup_lines(report: Report) -> list[str]:
    args = report.args
    lanes = "one receiver origin (one deliverer lane)" if args.origins == 1 else f"{args.origins} receiver origins"
    lane_limit = "" if args.lane_limit is None else f" --lane-limit {args.lane_limit}"
    lane_limit += "".join(f" --set {setting}" for setting in args.set)
    lane_limit += f" --kinds {args.kinds}" if args.kinds else ""
    lane_limit += " --split" if args.split else ""
    return [
        f"Machine: `nproc` = {os.cpu_count()}, {platform.platform()}, Python {platform.python_version()}; "
        f"tansu broker (memory), Postgres with fsync off; {service_shape(args)}; the receiver in its own process.",
        f"Parameters: `--rate {args.rate:g} --duration {args.duration:g} --policies {args.policies} --inflight "
        f"{args.inflight} --origins {args.origins}{lane_limit}`; {args.policies} webhook policies (one per namespace, "
        f"`PUSH_ARTIFACT`, one target each) over {lanes}; warm-up {WARMUP_S:g} s at the target rate, not measured; "
        f"{pipeline.PARTITIONS} partitions. Set-up (service ready, policies created): {report.setup_s:.1f} s.",
    ]


def service_lines(report: Report, main: Outcome) -> list[str]:
    """Throughput, CPU (ours and the rest of the machine's) and the flows' own figures."""
    ours = {name: share for name, share in report.cpu.items() if name != MACHINE}
    machine = report.cpu.get(MACHINE, 0.0)
    service_s = ours.get(SERVICE, 0.0) * report.window_s
    per_event = 1000 * service_s / main.delivered if main.delivered else float("nan")
    statuses = ", ".join(f"{status} {count:,}" for status, count in report.statuses.most_common()) or "none"
    return [
        f"Webhooks received at {main.received_rate:.0f}/s on average (first send → last arrival) against "
        f"{main.achieved_rate:.0f}/s sent. Deliveries of the measured events: {statuses}; misrouted (wrong "
        f"policy path): {main.misrouted}; still pending or running when the window closed: {report.unsettled}.",
        "CPU in the measured window (share of one core): "
        + ", ".join(f"{name} {share:.0%}" for name, share in ours.items())
        + f"; whole machine {machine:.0%} of {os.cpu_count()} cores, of which "
        f"{max(machine - sum(ours.values()), 0.0):.0%} other processes (not this bench's). Window "
        f"{report.window_s:.1f} s (first send until every outcome was written); service CPU per delivered "
        f"event: {per_event:.2f} ms (idle after the join, it used {report.idle_service:.0%} of a core).",
        "From the `up` process's `/metrics`, measured window:",
        *(f"- {kind}: {stats.describe()}" for kind, stats in report.flows.items() if stats.consumed),
    ]


def render(report: Report) -> str:
    main = report.main
    assert main is not None
    lines = [
        f"## Triggers benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *setup_lines(report),
        "",
        *results_table(report),
        "",
        f"Goal (issue): p50 < {GOAL_P50_MS:.0f} ms, p99 < {GOAL_P99_MS:.0f} ms at 500 events/s with 100 triggers.",
        _verdict("p50", percentile(main.latency_ms, 50), GOAL_P50_MS),
        _verdict("p99", percentile(main.latency_ms, 99), GOAL_P99_MS),
        "",
        *stages_table(main),
        "",
        *service_lines(report, main),
        "",
    ]
    if report.profile:
        lines += ["Service profile (py-spy, measured window):", "", "```", report.profile, "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="notifications per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the measured run")
    parser.add_argument("--policies", type=int, default=100, help="webhook policies (one namespace each)")
    parser.add_argument("--inflight", type=int, default=64, help="max concurrent POSTs")
    parser.add_argument("--profile", action="store_true", help="sample the service with py-spy")
    parser.add_argument("--keep-profile", action="store_true", help="keep the raw stacks in bench/results")
    parser.add_argument("--split", action="store_true", help="run `api` and `worker` processes instead of one `up`")
    parser.add_argument("--output", type=Path, default=pipeline.RESULTS_DIR / "triggers.md")
    parser.add_argument("--origins", type=int, default=1, help="receiver ports the policies' targets spread over")
    parser.add_argument("--kinds", default="", help="with --split: the worker's kinds (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="RW_NAME=VALUE",
                        help="a service setting for this run (repeatable)")  # fmt: skip
    parser.add_argument("--lane-limit", type=int, help="the service's triggers.concurrency_per_target (default 4)")
    parser.add_argument("--serve-receiver", metavar="PORT,...", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.policies <= 1000 or args.rate <= 0 or not 0 < args.duration <= 600:
        parser.error("expected 1 ≤ --policies ≤ 1000, --rate > 0 and 0 < --duration ≤ 600")
    if not 1 <= args.origins <= args.policies:
        parser.error("expected 1 ≤ --origins ≤ --policies")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_receiver is not None:
        serve_receiver([int(port) for port in args.serve_receiver.split(",")])
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        report = run(args, stack)
    text = render(report)
    print(text)
    args.output.write_text(text)
    print(f"total run time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
