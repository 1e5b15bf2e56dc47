"""Observability: JSON logs carrying the log context, the metrics table, real work producing both.

- ``workers/logs.py``: one JSON object per line, the context (event, repository, execution)
  per task, ``text`` unchanged; ``RW_LOG_FORMAT`` selects it.
- every metric of ``workers/metrics.py`` is documented in the README's Operations table;
- a real webhook delivery (ingress → broker → triggers worker → receiver) and a real
  dead-lettered event (consumer runner on the broker) log with their ids and count in metrics.
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.metrics import sample
from tests.support.receiver import Answer, WebhookReceiver
from tests.support.service import RunningService, running_service, service_settings
from tests.test_triggers import create_policy, jobs, post_push
from workers.config import ConfigError, load_settings
from workers.events.model import ImageEvent, decode_event, encode_event
from workers.logs import (
    bind_log_context,
    configure_logging,
    context_with,
    current_log_context,
    log_context,
    log_handler,
)
from workers.runtime.deadletter import DeadLetters
from workers.runtime.flow import Consumer, Flow, Record
from workers.runtime.kafka import Topics, ensure_topics
from workers.runtime.producer import KafkaProducer, OutgoingMessage
from workers.runtime.runner import ConsumerRunner
from workers.runtime.step import RunnerOptions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_EVENT = ROOT / "schemas" / "examples" / "image-events" / "1" / "push-tagged-manifest.json"

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root, kafka = logging.getLogger(), logging.getLogger("aiokafka")
    handlers, level, kafka_level = root.handlers[:], root.level, kafka.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kafka.setLevel(kafka_level)


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Records of every logger at INFO and above, as the json format writes them, parsed."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --- the log format -----------------------------------------------------------------------------


def test_json_format_writes_one_object_per_line_with_the_context_fields(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("workers.test")
    log.info("outside any context")
    with log_context(event_id="evt-1", repository="team/app", execution_id=42):
        log.warning("two\nlines %s", "in one record")
        with log_context(execution_id=43):
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("attempt failed")
        log.info("explicit field", extra={"execution_id": "slot-7"})
    log.debug("below the level")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    outside, inside, failed, explicit = (json.loads(line) for line in lines)
    assert {"timestamp", "level", "logger", "message"} <= outside.keys()
    assert datetime.fromisoformat(outside["timestamp"]).utcoffset() is not None
    assert (outside["level"], outside["logger"], outside["message"]) == ("INFO", "workers.test", "outside any context")
    assert not {"event_id", "repository", "execution_id", "exception"} & outside.keys()
    assert inside["message"] == "two\nlines in one record" and inside["level"] == "WARNING"
    assert (inside["event_id"], inside["repository"], inside["execution_id"]) == ("evt-1", "team/app", "42")
    assert failed["execution_id"] == "43" and failed["event_id"] == "evt-1"  # inner scope adds, keeps the rest
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exception"]
    assert "Traceback" in failed["exception"]
    assert explicit["execution_id"] == "slot-7" and explicit["repository"] == "team/app"  # extra= wins
    assert current_log_context() == {}


def test_text_format_is_the_human_one(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "text", stream)
    with log_context(event_id="evt-1"):
        logging.getLogger("workers.test").warning("hello %d", 1)
        logging.getLogger("workers.test").info("hidden")
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING workers\.test: hello 1", line), line


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        log_handler("xml")


async def test_each_task_keeps_its_own_context_and_nothing_leaks(json_lines: Lines) -> None:
    log = logging.getLogger("workers.test")
    both_started = asyncio.Barrier(2)

    async def work(name: str) -> None:
        await both_started.wait()  # interleave the two tasks
        log.info("working on %s", name)

    with log_context(repository="team/app"):
        first = asyncio.create_task(work("a"), context=context_with(execution_id="a"))
        second = asyncio.create_task(work("b"), context=context_with(execution_id="b"))
        await asyncio.gather(first, second)
        with log_context(event_id="evt-9"):
            bind_log_context(execution_id="run-5")  # known later, e.g. a retention run's id
            log.info("bound")
        log.info("after")

    by_message = {line["message"]: line for line in json_lines() if line["logger"] == "workers.test"}
    assert by_message["working on a"]["execution_id"] == "a" and by_message["working on b"]["execution_id"] == "b"
    assert by_message["working on a"]["repository"] == "team/app"  # inherited from the creating task
    assert by_message["bound"]["execution_id"] == "run-5" and by_message["bound"]["event_id"] == "evt-9"
    assert "execution_id" not in by_message["after"] and "event_id" not in by_message["after"]


def test_log_format_setting_defaults_to_json_and_is_validated(tmp_path: Path) -> None:
    assert load_settings(None, {"RW_DATA_DIR": str(tmp_path)}).log_format == "json"
    assert load_settings(None, {"RW_DATA_DIR": str(tmp_path), "RW_LOG_FORMAT": "TEXT"}).log_format == "text"
    with pytest.raises(ConfigError, match=r"RW_LOG_FORMAT \(log_format\): expected json or text"):
        load_settings(None, {"RW_DATA_DIR": str(tmp_path), "RW_LOG_FORMAT": "xml"})


# --- the metrics table --------------------------------------------------------------------------


def _defined_metrics() -> dict[str, set[str]]:
    """Metric name → label names, from the constructor calls in workers/metrics.py."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse((ROOT / "workers" / "metrics.py").read_text())):
        kinds = ("Counter", "Gauge", "Histogram", "Summary", "Info", "Enum")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in kinds:
            labels = next((k.value for k in node.keywords if k.arg == "labelnames"), None)
            if labels is None and len(node.args) > 2:
                labels = node.args[2]
            found[ast.literal_eval(node.args[0])] = set(ast.literal_eval(labels)) if labels else set()
    assert found, "no metrics found in workers/metrics.py"
    return found


def _documented_metrics() -> dict[str, set[str]]:
    """Metric name → label names, from the README table under "## Operations"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Operations\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(rw_\w+)` \| ([^|]*) \| ([^|]+) \|$", section, flags=re.MULTILINE)
    documented = {name: set(re.findall(r"`(\w+)`", labels)) for name, labels, meaning in rows if meaning.strip()}
    assert len(documented) == len(rows), "every row says what the metric means"
    return documented


def test_every_metric_is_in_the_readme_table_with_its_labels() -> None:
    defined, documented = _defined_metrics(), _documented_metrics()
    missing = sorted(set(defined) - set(documented))
    assert not missing, f"add to the README Operations table: {missing}"
    stale = sorted(set(documented) - set(defined))
    assert not stale, f"in the README but not in workers/metrics.py: {stale}"
    wrong = {name: (documented[name], labels) for name, labels in defined.items() if documented[name] != labels}
    assert not wrong, f"README labels differ (README, code): {wrong}"


# --- real work: a webhook delivery ---------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as server:
        yield server


@pytest.fixture
async def service(kafka: Any, postgres_url: str, topic_prefix: str) -> AsyncIterator[RunningService]:
    triggers = {
        "allowed_networks": ["127.0.0.0/8"],
        "retry_schedule_s": [0, 0.2, 0.2, 0.2],
        "breaker_failures": 1,  # the first failure opens the target's circuit
        "breaker_cooldown_s": 0.2,
    }
    regions = {"region-a": {"registry": "http://127.0.0.1:5000"}}  # names the image in payloads; never called
    settings = service_settings(postgres_url, kafka.bootstrap, topic_prefix, triggers=triggers, regions=regions)
    async with running_service(settings) as running:
        yield running


async def test_a_retried_delivery_logs_with_its_ids_and_counts_in_metrics(
    service: RunningService, receiver: WebhookReceiver, json_lines: Lines
) -> None:
    before = {
        "retry": sample("rw_trigger_deliveries_total", kind="webhook", outcome="retry_scheduled"),
        "delivered": sample("rw_trigger_deliveries_total", kind="webhook", outcome="delivered"),
        "attempts": sample("rw_trigger_attempt_seconds_count", kind="webhook"),
        "opens": sample("rw_trigger_breaker_opens_total", kind="webhook"),
    }
    receiver.script([Answer(500)])
    policy_id, _ = await create_policy(service, f"{receiver.url}/observed")
    await post_push(service, "v1", "evt-observed-1")
    await receiver.wait_for(2, timeout_s=15)

    deadline = asyncio.get_running_loop().time() + 15
    while not (found := await jobs(service, policy_id)) or found[0]["status"] != "Success":
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)
    delivery_id = str(found[0]["id"])

    assert sample("rw_trigger_deliveries_total", kind="webhook", outcome="retry_scheduled") - before["retry"] == 1
    assert sample("rw_trigger_deliveries_total", kind="webhook", outcome="delivered") - before["delivered"] == 1
    assert sample("rw_trigger_attempt_seconds_count", kind="webhook") - before["attempts"] == 2
    assert sample("rw_trigger_breaker_opens_total", kind="webhook") - before["opens"] >= 1

    about = [line for line in json_lines() if line.get("execution_id") == delivery_id]
    assert about, json_lines()
    for line in about:
        assert (line["event_id"], line["repository"]) == ("evt-observed-1", "team/app"), line
    retried = f"delivery {delivery_id} (webhook) retry_scheduled: attempt 1 failed: HTTP 500"
    assert any(line["level"] == "INFO" and line["message"].startswith(retried) for line in about), about
    assert any(line["level"] == "WARNING" and "circuit of webhook target opened" in line["message"] for line in about)

    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics") as response:
        exported = await response.text()
    assert 'rw_trigger_deliveries_total{kind="webhook",outcome="delivered"}' in exported
    assert "rw_trigger_attempt_seconds_bucket" in exported


# --- real work: a dead-lettered event in the consumer runner ------------------------------------


async def test_a_dead_lettered_event_is_logged_with_its_event_id_and_repository(
    kafka: Any, topic_prefix: str, json_lines: Lines
) -> None:
    settings = service_settings("sqlite+aiosqlite:///unused.db", kafka.bootstrap, topic_prefix)
    topics = Topics.from_prefix(topic_prefix)
    await ensure_topics(settings.kafka, kafka.bootstrap, topics)
    template = decode_event(EXAMPLE_EVENT.read_bytes())
    good, poison = template._replace(id="evt-good"), template._replace(id="evt-poison", name="team/poisoned")
    handled: list[str] = []

    async def handle(events: Sequence[ImageEvent]) -> None:
        if any(event.id == "evt-poison" for event in events):
            raise RuntimeError("cannot apply this event")
        handled.extend(event.id for event in events)

    def decode(record: Record) -> ImageEvent:
        return decode_event(record.value)

    producer = KafkaProducer(settings.kafka, kafka.bootstrap)
    await producer.start()
    try:
        messages = [OutgoingMessage(topics.image_events, b"team/app", encode_event(e)) for e in (good, poison)]
        messages.append(OutgoingMessage(topics.image_events, b"team/app", b"not json"))
        await producer.publish(messages)
        flow = Flow(kind="observed", topic=topics.image_events, decode=decode, handle=handle)
        consumer = Consumer(topics.image_events, f"{topic_prefix}.observed", (flow,))
        options = RunnerOptions(
            max_batch=100, max_buffered=100, commit_interval_s=0.1, drain_timeout_s=5, concurrency=2
        )
        dead_letters = DeadLetters(producer, topics.dead_letter)
        runner = ConsumerRunner(consumer, settings.kafka, kafka.bootstrap, options, dead_letters)
        before = sample("rw_events_dead_lettered_total", kind="observed")
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while sample("rw_events_dead_lettered_total", kind="observed") - before < 2:
                assert asyncio.get_running_loop().time() < deadline, json_lines()
                assert not task.done(), task
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await producer.stop()

    assert handled == ["evt-good"]
    runner_lines = [line for line in json_lines() if line["logger"] == "workers.runtime.step"]
    (poisoned,) = [line for line in runner_lines if line.get("event_id") == "evt-poison"]
    assert poisoned["repository"] == "team/poisoned" and poisoned["level"] == "ERROR"
    assert "dead-lettered" in poisoned["message"] and "cannot apply this event" in poisoned["exception"]
    (undecodable,) = [line for line in runner_lines if "not JSON" in line["message"]]
    assert undecodable["level"] == "WARNING" and "dead-lettered" in undecodable["message"]
    assert "event_id" not in undecodable
