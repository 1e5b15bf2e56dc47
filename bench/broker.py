"""The bundled broker's fetch cost against the data it retains (why long runs on it slow down).

    python bench/broker.py [--retained 1000,10000,30000,60000] [--live 2000] [--output PATH]
    python bench/broker.py --soak MINUTES [--rate 500] [--window 30]

For each retained size N it starts a fresh tansu broker (the one ``registry-workers up``
bundles, memory storage), produces N one-record batches to a 12-partition topic, then streams
``--live`` more records one by one while one consumer group reads them as they arrive (the
service's shape: one fetch per produce). It prints the broker's CPU per 1,000 live records and
the ratio against the smallest N, measured in the same run. An idle consumer's empty fetches
are measured too, as the reference that costs the same at any N.

``--soak`` is the reference for ``bench/soak.py``: the same rate for the same time through a
plain ``AIOKafkaProducer`` and a plain ``AIOKafkaConsumer`` group with the service's client
options (keyed by 500 repository names, one record per send as the ingress produces), and no
registry-workers code in the path. Per window it prints records sent
and received, produce → consume latency (p50, p99) and the broker's CPU, and writes
``bench/results/broker-soak.md``. Whatever degrades here degrades in any service on this broker.

Memory storage keeps every batch (no retention, and DeleteRecords is not implemented: the
broker panics), so in a soak the retained data, and with it the cost of every fetch, grows
without bound. Apache Kafka finds a fetch's position through a sparse offset index per segment,
so its cost does not depend on how much the topic retains.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pipeline
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.services import KafkaBroker
from workers.runtime.kafka import Topics, consumer_options, ensure_topics, producer_options

PARTITIONS = 12
TOPIC = "fetch-cost"
PAYLOAD = b"x" * 600  # about one image event


@dataclass(frozen=True)
class Cost:
    retained: int
    live_cpu_ms_per_1000: float
    idle_cpu_share: float


async def measure(bootstrap: str, pid: int, retained: int, live: int) -> Cost:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id="bench", auto_offset_reset="latest", fetch_max_wait_ms=20
    )
    try:
        await asyncio.gather(*(fill(producer, p, retained // PARTITIONS) for p in range(PARTITIONS)))
        await consumer.start()
        await consumer.getmany(timeout_ms=1000)  # joined, positioned at the end
        before, since = pipeline.process_cpu_s(pid), time.monotonic()
        await asyncio.sleep(3.0)  # caught up: empty fetches only
        idle = (pipeline.process_cpu_s(pid) - before) / (time.monotonic() - since)
        before = pipeline.process_cpu_s(pid)
        reading = asyncio.create_task(read(consumer, live))
        for index in range(live):
            await producer.send_and_wait(TOPIC, PAYLOAD, partition=index % PARTITIONS)
        await asyncio.wait_for(reading, 60)
        used = pipeline.process_cpu_s(pid) - before
    finally:
        await consumer.stop()
        await producer.stop()
    return Cost(retained, 1000 * used * 1000 / live, idle)


async def fill(producer: AIOKafkaProducer, partition: int, count: int) -> None:
    for _ in range(count):  # one record per batch, as the ingress produces them
        await producer.send_and_wait(TOPIC, PAYLOAD, partition=partition)


async def read(consumer: AIOKafkaConsumer, count: int) -> None:
    seen = 0
    while seen < count:
        fetched = await consumer.getmany(timeout_ms=200)
        seen += sum(len(records) for records in fetched.values())


def report(costs: Sequence[Cost], live: int) -> str:
    reference = costs[0]
    lines = [
        f"## Bundled broker (tansu, memory storage): fetch cost against retained data, {live:,} live records",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `nproc` = {os.cpu_count()}. `python bench/broker.py`: a fresh "
        f"broker per row, a {PARTITIONS}-partition topic filled with one-record batches, then {live:,} records "
        "produced one by one while one consumer group reads them.",
        "",
        "| retained batches | broker CPU per 1,000 live records | ratio to the smallest | idle consumer |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for cost in costs:
        ratio = cost.live_cpu_ms_per_1000 / reference.live_cpu_ms_per_1000
        lines.append(
            f"| {cost.retained:,} | {cost.live_cpu_ms_per_1000:.0f} ms | {ratio:.1f} x | "
            f"{cost.idle_cpu_share:.0%} of a core |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class Window:
    minute: float
    sent: int
    received: int
    latencies_ms: list[float]
    broker_cpu: float


async def soak(bootstrap: str, pid: int, minutes: float, rate: float, window_s: float) -> list[Window]:
    """Produce at ``rate`` for ``minutes`` while one consumer group reads; one row per window."""
    kafka = pipeline.kafka_settings(bootstrap, "soak")
    topic = Topics.from_prefix(kafka.topic_prefix).image_events
    await ensure_topics(kafka, bootstrap, Topics.from_prefix(kafka.topic_prefix))
    producer = AIOKafkaProducer(**producer_options(kafka, bootstrap))
    consumer = AIOKafkaConsumer(topic, **consumer_options(kafka, bootstrap, "soak"))
    await producer.start()
    await consumer.start()
    windows: list[Window] = []
    current = Window(0.0, 0, 0, [], 0.0)
    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                current.received += len(records)
                current.latencies_ms += [(now - float(r.value or b"0")) * 1000 for r in records]

    receiving = asyncio.create_task(receive())
    pending: set[asyncio.Future[object]] = set()
    started, cpu_before, index = time.monotonic(), pipeline.process_cpu_s(pid), 0
    try:
        while (elapsed := time.monotonic() - started) < minutes * 60:
            due = int(elapsed * rate)
            for _ in range(due - index):
                future = await producer.send(topic, str(time.time()).encode(), key=b"repo-%d" % (index % 500))
                pending.add(future)
                future.add_done_callback(pending.discard)
                index += 1
                current.sent += 1
            if elapsed >= (len(windows) + 1) * window_s:
                cpu = pipeline.process_cpu_s(pid)
                windows.append(current)
                current.minute, current.broker_cpu = round(elapsed / 60, 2), (cpu - cpu_before) / window_s
                print(_row(current), file=sys.stderr)
                current, cpu_before = Window(0.0, 0, 0, [], 0.0), cpu
            await asyncio.sleep(0.002)
    finally:
        stop.set()
        await asyncio.gather(receiving, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return windows


def _row(window: Window) -> str:
    latencies = window.latencies_ms
    p50, p99 = (f"{pipeline.percentile(latencies, pct):.0f}" if latencies else "-" for pct in (50, 99))
    return f"| {window.minute:5.1f} | {window.sent:,} | {window.received:,} | {p50} | {p99} | {window.broker_cpu:.0%} |"


def soak_report(windows: Sequence[Window], minutes: float, rate: float) -> str:
    sent = sum(w.sent for w in windows)
    received = sum(w.received for w in windows)
    lines = [
        f"## Bundled broker soak without registry-workers: {rate:.0f} records/s for {minutes:g} min",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `nproc` = {os.cpu_count()}. "
        f"`python bench/broker.py --soak {minutes:g} --rate {rate:g}`: a plain `AIOKafkaProducer` (one record "
        f"per send, keyed by 500 names) to a {PARTITIONS}-partition topic on a fresh tansu broker, one plain "
        "`AIOKafkaConsumer` group reading, both with the service's client options; latency = receive time - "
        "send time (same clock).",
        "",
        f"Sent {sent:,}, received {received:,} during the run.",
        "",
        "| minute | sent | received | p50 ms | p99 ms | broker CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(w) for w in windows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retained", default="1000,10000,30000,60000", help="comma-separated batch counts")
    parser.add_argument("--live", type=int, default=2000, help="records streamed while measuring")
    parser.add_argument("--output", type=Path, help="default: bench/results/broker.md (broker-soak.md with --soak)")
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="the reference soak instead of the cost table")
    parser.add_argument("--rate", type=float, default=500.0, help="records per second in --soak")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per row in --soak")
    args = parser.parse_args(argv)
    if args.soak:
        with KafkaBroker() as broker:
            windows = asyncio.run(soak(broker.bootstrap, broker.pid or 0, args.soak, args.rate, args.window))
        write(soak_report(windows, args.soak, args.rate), args.output or pipeline.RESULTS_DIR / "broker-soak.md")
        return
    costs = []
    for retained in (int(n) for n in args.retained.split(",")):
        with KafkaBroker() as broker:
            costs.append(asyncio.run(measure(broker.bootstrap, broker.pid or 0, retained, args.live)))
        print(f"retained {retained:,}: {costs[-1].live_cpu_ms_per_1000:.0f} ms per 1,000", file=sys.stderr)
    write(report(costs, args.live), args.output or pipeline.RESULTS_DIR / "broker.md")


def write(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
