"""Soak: a steady rate of pushes through ingress → triggers (HTTP webhooks) → history for a long time.

    python bench/soak.py [--minutes 30] [--rate 500] [--policies 100] [--window 30] [--bootstrap HOST:PORT]

Starts its own Postgres and broker (or uses the Apache Kafka at ``--bootstrap``), one
``registry-workers api`` process (ingress + API) and one ``registry-workers worker`` process
(every worker kind), and a receiver process. Notifications are sent open-loop at ``--rate``;
every ``--window`` seconds it prints one row of the series: what was sent and delivered in the
window, notification → webhook latency (p50/p99/max of the webhooks that arrived in it), the
backlog, the resident memory (RSS) of the worker and api processes, and the CPU of the worker,
api, Postgres and the bundled broker. At the end: a verdict on RSS (< 200 MB, no upward trend: the slope over the second
half) and latency (p99 of the last third against the first third), the table in
``bench/results/soak.md`` and a plot of RSS and latency over time in ``bench/results/soak.png``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import copy
import hashlib
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pipeline
import triggers
from aiohttp import web
from pipeline import percentile

from tests.support.services import KafkaBroker, PostgresServer, free_port

RSS_LIMIT_MB = 200.0
PAGE_SIZE = 4096
MAX_INFLIGHT = 256
DRAIN_LIMIT_S = 120.0  # after the last send, how long to wait for the backlog


# --------------------------------------------------------------------------------------------- receiver


class Arrivals:
    """In the receiver process: ``(arrival time, sequence number)`` of every webhook, readable from an index."""

    def __init__(self) -> None:
        self.times = array.array("d")
        self.sequence = array.array("q")

    async def record(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        tag = orjson.loads(body)["event_data"]["resources"][0]["tag"]
        self.times.append(at)
        self.sequence.append(int(tag.removeprefix("soak-")))
        return web.Response(text="ok")

    async def since(self, request: web.Request) -> web.Response:
        start = int(request.query.get("from", "0"))
        rows = list(zip(self.times[start:], self.sequence[start:], strict=True))
        return web.Response(body=orjson.dumps(rows), content_type="application/json")


def serve_receiver(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    arrivals = Arrivals()
    app = web.Application()
    app.router.add_get("/_since", arrivals.since)
    app.router.add_post("/{tail:.*}", arrivals.record)
    web.run_app(app, sock=sock, access_log=None, print=None)


class SoakReceiver(triggers.ReceiverProcess):
    """``python bench/soak.py --serve-receiver PORT`` (the base class's start/stop, this file's server)."""

    def __enter__(self) -> SoakReceiver:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", str(self.ports[0])]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ports[0]), timeout=1):
                return
            time.sleep(0.1)
        raise TimeoutError(f"receiver not listening within {timeout_s} s")

    async def since(self, http: aiohttp.ClientSession, start: int) -> list[tuple[float, int]]:
        async with http.get(f"{self.url}/_since", params={"from": str(start)}) as resp:
            return [(float(at), int(seq)) for at, seq in orjson.loads(await resp.read())]


# --------------------------------------------------------------------------------------------- traffic


class Notifications:
    """Distribution push notifications built on the fly: number i → tag ``soak-i``, namespace i % policies."""

    def __init__(self, policies: int) -> None:
        self._template = orjson.loads(pipeline.ENVELOPE_EXAMPLE.read_bytes())["events"][0]
        self._policies = policies

    def body(self, index: int) -> bytes:
        event = copy.deepcopy(self._template)
        tag, repository = f"soak-{index}", f"ns{index % self._policies:03d}/app"
        digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        event["target"].update(repository=repository, digest=digest, tag=tag)
        event.update(id=f"soak-event-{index}", timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        return orjson.dumps({"events": [event]})


@dataclass
class Sender:
    """Open loop at ``rate``: notification i is due at ``i / rate`` s; keeps every send time."""

    rate: float
    notifications: Notifications
    sent_at: array.array[float] = field(default_factory=lambda: array.array("d"))
    refused: int = 0

    async def run(self, http: aiohttp.ClientSession, ingress: str, duration_s: float) -> None:
        headers = {"Authorization": f"Bearer {pipeline.INGRESS_TOKEN}", "Content-Type": pipeline.DISTRIBUTION_TYPE}
        slots = asyncio.Semaphore(MAX_INFLIGHT)
        loop = asyncio.get_running_loop()
        start, total = loop.time(), int(self.rate * duration_s)
        pending: set[asyncio.Task[None]] = set()
        for index in range(total):
            delay = start + index / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            self.sent_at.append(time.time())
            task = asyncio.create_task(self._post(http, ingress, headers, self.notifications.body(index), slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _post(
        self, http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes, slots: asyncio.Semaphore
    ) -> None:
        try:
            async with http.post(url, data=body, headers=headers) as resp:
                if resp.status != 202:
                    self.refused += 1
        except aiohttp.ClientError:
            self.refused += 1
        finally:
            slots.release()


# --------------------------------------------------------------------------------------------- sampling


def rss_mb(pid: int) -> float:
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE_SIZE / 1e6


@dataclass(frozen=True)
class Sample:
    minute: float
    sent: int
    delivered: int
    backlog: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    worker_mb: float
    api_mb: float
    cpu: dict[str, float]  # share of one core in the window, by process


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    delivered_total: int = 0
    next_arrival: int = 0


class WindowCpu:
    """CPU of the worker, api, Postgres and broker since the previous window, as shares of one core."""

    def __init__(self, meter: pipeline.CpuMeter):
        self._meter = meter
        self._meter.start()
        self._since = time.monotonic()

    def shares(self) -> dict[str, float]:
        used, now = self._meter.read(), time.monotonic()
        elapsed, self._since = max(now - self._since, 1e-9), now
        self._meter.start()
        return {name: seconds / elapsed for name, seconds in used.items()}


async def sample_window(
    http: aiohttp.ClientSession, receiver: SoakReceiver, sender: Sender, series: Series, started: float,
    sent_before: int, worker: pipeline.ServiceProcess, api: pipeline.ServiceProcess, cpu: WindowCpu,
) -> Sample:  # fmt: skip
    arrivals = await receiver.since(http, series.next_arrival)
    series.next_arrival += len(arrivals)
    latencies = [(at - sender.sent_at[seq]) * 1000 for at, seq in arrivals if seq < len(sender.sent_at)]
    series.latencies_ms.extend(latencies)
    series.delivered_total += len(arrivals)
    sample = Sample(
        minute=(time.time() - started) / 60,
        sent=len(sender.sent_at) - sent_before,
        delivered=len(arrivals),
        backlog=len(sender.sent_at) - series.delivered_total,
        p50_ms=percentile(latencies, 50) if latencies else float("nan"),
        p99_ms=percentile(latencies, 99) if latencies else float("nan"),
        max_ms=max(latencies, default=float("nan")),
        worker_mb=rss_mb(worker.pid),
        api_mb=rss_mb(api.pid),
        cpu=cpu.shares(),
    )
    series.samples.append(sample)
    return sample


def row(sample: Sample) -> str:
    return (
        f"| {sample.minute:5.1f} | {sample.sent:,} | {sample.delivered:,} | {sample.backlog:,} | "
        f"{sample.p50_ms:.0f} | {sample.p99_ms:.0f} | {sample.max_ms:.0f} | "
        f"{sample.worker_mb:.0f} | {sample.api_mb:.0f} | "
        + " | ".join(f"{sample.cpu.get(name, 0.0):.0%}" for name in CPU_COLUMNS)
        + " |"
    )


CPU_COLUMNS = ("worker", "api", "Postgres", "broker")
HEADER = [
    "| minute | sent | delivered | backlog | p50 ms | p99 ms | max ms | worker RSS MB | api RSS MB | "
    + " | ".join(f"{name} CPU" for name in CPU_COLUMNS)
    + " |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(CPU_COLUMNS),
]


def cpu_meter(worker: pipeline.ServiceProcess, api: pipeline.ServiceProcess, pg: PostgresServer,
              broker: KafkaBroker | None) -> pipeline.CpuMeter:  # fmt: skip
    """``broker`` None: an external broker, not measured (its column stays 0)."""
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    readers = {
        "worker": lambda: pipeline.process_cpu_s(worker.pid),
        "api": lambda: pipeline.process_cpu_s(api.pid),
        "Postgres": lambda: pipeline.tree_cpu_s(postmaster),
    }
    if broker is not None and broker.pid:
        broker_pid = broker.pid
        readers["broker"] = lambda: pipeline.process_cpu_s(broker_pid)
    return pipeline.CpuMeter(readers)


# --------------------------------------------------------------------------------------------- verdict


def slope_per_10_min(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (minutes), per 10 minutes."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 10 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def verdict(series: Series, args: argparse.Namespace, sent: int, refused: int) -> list[str]:
    samples = [s for s in series.samples if s.delivered]
    half = samples[len(samples) // 2 :]
    third = max(1, len(samples) // 3)
    peak = max(max(s.worker_mb for s in samples), max(s.api_mb for s in samples))
    trend = slope_per_10_min([s.minute for s in half], [s.worker_mb for s in half])
    early = percentile([s.p99_ms for s in samples[:third]], 50)
    late = percentile([s.p99_ms for s in samples[-third:]], 50)
    lost = sent - refused - series.delivered_total
    return [
        f"- Sent {sent:,} notifications ({refused} refused), {series.delivered_total:,} webhooks received "
        f"({lost:,} not received when the run ended).",
        f"- Overall latency p50 {percentile(series.latencies_ms, 50):.0f} ms, p99 "
        f"{percentile(series.latencies_ms, 99):.0f} ms, max {max(series.latencies_ms):.0f} ms.",
        f"- RSS peak {peak:.0f} MB (limit {RSS_LIMIT_MB:.0f} MB): **{'met' if peak < RSS_LIMIT_MB else 'NOT met'}**; "
        f"worker RSS slope over the second half {trend:+.1f} MB per 10 min: "
        f"**{'no upward trend' if trend < 2.0 else 'growing'}**.",
        f"- p99 per window, median of the first third {early:.0f} ms, of the last third {late:.0f} ms: "
        f"**{'stable' if late <= max(2 * early, early + 50) else 'degrading'}**.",
    ]


def plot(series: Series, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.minute for s in series.samples]
    fig, (rss, latency, cpu) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    rss.plot(minutes, [s.worker_mb for s in series.samples], label="worker")
    rss.plot(minutes, [s.api_mb for s in series.samples], label="api")
    rss.axhline(RSS_LIMIT_MB, color="red", linestyle="--", linewidth=0.8, label=f"{RSS_LIMIT_MB:.0f} MB")
    rss.set_ylabel("RSS (MB)")
    rss.set_ylim(bottom=0)
    rss.legend(loc="lower right")
    latency.plot(minutes, [s.p50_ms for s in series.samples], label="p50")
    latency.plot(minutes, [s.p99_ms for s in series.samples], label="p99")
    latency.set_ylabel("push → webhook (ms)")
    latency.set_yscale("log")
    latency.legend(loc="upper right")
    for name in CPU_COLUMNS:
        cpu.plot(minutes, [100 * sample.cpu.get(name, 0.0) for sample in series.samples], label=name)
    cpu.set_ylabel("CPU (% of a core)")
    cpu.set_ylim(bottom=0)
    cpu.set_xlabel("minutes")
    cpu.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- run


async def soak(args: argparse.Namespace, api: pipeline.ServiceProcess, worker: pipeline.ServiceProcess,
               receiver: SoakReceiver, meter: pipeline.CpuMeter) -> tuple[Series, Sender]:  # fmt: skip
    await pipeline.wait_ready(api)
    await pipeline.wait_ready(worker)
    await triggers.create_policies(f"http://{api.listen}", receiver, args.policies)
    sender = Sender(args.rate, Notifications(args.policies))
    series = Series()
    print(f"soak: {args.rate:.0f}/s for {args.minutes:g} min, {args.policies} policies", file=sys.stderr)
    for line in HEADER:
        print(line)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_INFLIGHT)) as http:
        started, cpu = time.time(), WindowCpu(meter)
        sending = asyncio.create_task(sender.run(http, f"http://{api.listen}/events/distribution", args.minutes * 60))
        sent_before, drain_deadline = 0, float("inf")
        while not sending.done() or series.delivered_total < len(sender.sent_at) - sender.refused:
            if sending.done():
                await asyncio.sleep(args.window)  # draining: one row per window, as while sending
            else:
                await asyncio.wait({sending}, timeout=args.window)
            api.check_alive()
            worker.check_alive()
            sample = await sample_window(http, receiver, sender, series, started, sent_before, worker, api, cpu)
            sent_before += sample.sent
            print(row(sample), flush=True)
            if sending.done():
                drain_deadline = min(drain_deadline, time.monotonic() + DRAIN_LIMIT_S)
                if time.monotonic() > drain_deadline:
                    break  # the verdict says how many did not arrive (a retry may still be due)
        await sending
    return series, sender


def broker_name(args: argparse.Namespace) -> str:
    return f"Kafka at {args.bootstrap}" if args.bootstrap else "the bundled tansu broker (memory storage)"


def render(args: argparse.Namespace, series: Series, sender: Sender, plot_name: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Soak, {when}",
        "",
        f"Machine: `nproc` = 2, {platform.platform()}, Python {platform.python_version()}; {broker_name(args)}, "
        "Postgres with fsync off; one `api` process, one `worker` process (every worker kind), the receiver in "
        f"its own process. `python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:g} "
        f"--policies {args.policies} --window {args.window:g}`: Distribution push notifications → ingress → "
        "Kafka → triggers → signed webhook → receiver; the deliveries, inventory and history in Postgres.",
        "",
        *verdict(series, args, len(sender.sent_at), sender.refused),
        "",
        f"![RSS and latency over time]({plot_name})",
        "",
        *HEADER,
        *(row(s) for s in series.samples),
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-soak-")))
    broker = None if args.bootstrap else stack.enter_context(KafkaBroker())
    bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
    pg = stack.enter_context(PostgresServer())
    database_url = pg.create_database("soak")
    receiver = stack.enter_context(SoakReceiver(workdir / "receiver.log"))
    env = triggers.service_env(database_url, bootstrap, workdir, None)
    if args.bootstrap:
        env["RW_KAFKA_IDEMPOTENCE"] = "true"  # Apache Kafka: the production setting
    subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, check=True, cwd=pipeline.REPO_ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    api = stack.enter_context(pipeline.start_service(["api"], env, workdir, "api"))
    worker_env = {**env, "RW_LISTEN": f"127.0.0.1:{free_port()}"}
    worker = stack.enter_context(pipeline.start_service(["worker"], worker_env, workdir, "worker"))
    series, sender = asyncio.run(soak(args, api, worker, receiver, cpu_meter(worker, api, pg, broker)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    png = args.output.with_suffix(".png")
    plot(series, png, f"soak: {args.rate:g} pushes/s for {args.minutes:g} min, one worker")
    return render(args, series, sender, png.name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=500.0, help="notifications per second")
    parser.add_argument("--policies", type=int, default=100, help="webhook policies (one namespace each)")
    parser.add_argument("--bootstrap", default="", help="an Apache Kafka to use instead of the bundled broker")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per row of the series")
    parser.add_argument("--output", type=Path, default=pipeline.RESULTS_DIR / "soak.md")
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return 0
    with contextlib.ExitStack() as stack:
        text = run(args, stack)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
