"""The bundled broker's fetch cost against the data it retains (why long runs on it slow down).

    python bench/broker.py [--retained 1000,10000,30000,60000] [--live 2000] [--output PATH]

For each retained size N it starts a fresh tansu broker (the one ``registry-workers up``
bundles, memory storage), produces N one-record batches to a 12-partition topic, then streams
``--live`` more records one by one while one consumer group reads them as they arrive (the
service's shape: one fetch per produce). It prints the broker's CPU per 1,000 live records and
the ratio against the smallest N, measured in the same run. An idle consumer's empty fetches
are measured too, as the reference that costs the same at any N.

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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retained", default="1000,10000,30000,60000", help="comma-separated batch counts")
    parser.add_argument("--live", type=int, default=2000, help="records streamed while measuring")
    parser.add_argument("--output", type=Path, default=pipeline.RESULTS_DIR / "broker.md")
    args = parser.parse_args(argv)
    costs = []
    for retained in (int(n) for n in args.retained.split(",")):
        with KafkaBroker() as broker:
            costs.append(asyncio.run(measure(broker.bootstrap, broker.pid or 0, retained, args.live)))
        print(f"retained {retained:,}: {costs[-1].live_cpu_ms_per_1000:.0f} ms per 1,000", file=sys.stderr)
    text = report(costs, args.live)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
