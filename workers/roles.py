"""Process roles: ``up`` (everything), ``api``, ``worker``, ``scheduler``, ``migrate``.

Each role owns its resources through one ``AsyncExitStack`` (closed in reverse order of
opening) and stops on SIGTERM/SIGINT: consumers stop polling, finish and commit their batches
in flight within ``worker.drain_timeout_s``, then the listener, producer, database and (for
``up``) the bundled broker are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.api.app import build_api_app, build_ops_app, readiness_checks
from workers.api.context import ApiContext, utc_now
from workers.config import ConfigError, Settings
from workers.db.engine import TRANSIENT_DB_ERRORS, create_engine, ping, session_factory
from workers.db.migrate import upgrade_to_head
from workers.runtime.bundled_broker import BundledBroker
from workers.runtime.deadletter import DeadLetters
from workers.runtime.kafka import Topics, wait_for_broker
from workers.runtime.producer import KafkaProducer
from workers.runtime.runner import ConsumerRunner
from workers.runtime.step import RunnerOptions
from workers.scheduler.dispatcher import Dispatcher, run_scheduler
from workers.secrets import secret_box
from workers.topology import FlowDependencies, build_consumers, build_flows, schedules, stored_schedules

log = logging.getLogger(__name__)

ROLES = ("up", "api", "worker", "scheduler", "migrate")
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RoleOptions:
    role: str
    worker_kinds: Sequence[str] = ()


async def run_role(settings: Settings, options: RoleOptions, stop: asyncio.Event | None = None) -> None:
    """Run ``options.role`` until ``stop`` is set (default: SIGTERM/SIGINT).

    Raises ``ConfigError`` for unusable settings.
    """
    if options.role == "migrate":
        await migrate(settings)
        return
    if options.role != "up" and not settings.kafka.bootstrap:
        raise ConfigError(
            f"invalid configuration: RW_KAFKA_BOOTSTRAP (kafka.bootstrap): required for the {options.role!r} role; "
            "only 'up' starts the bundled broker"
        )
    stop = stop or _stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        bootstrap = settings.kafka.bootstrap or _start_bundled_broker(settings, stack)
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        await _wait_for_database(engine)
        if options.role == "up":
            await upgrade_to_head(engine)
        topics = Topics.from_prefix(settings.kafka.topic_prefix)
        await wait_for_broker(settings.kafka, bootstrap, topics, STARTUP_TIMEOUT_S)
        producer = KafkaProducer(settings.kafka, bootstrap)
        stack.push_async_callback(producer.stop)
        await producer.start()
        ctx = ApiContext(settings, engine, session_factory(engine), producer, topics, secret_box(settings), utc_now)
        app = build_api_app(ctx) if options.role in ("up", "api") else build_ops_app(readiness_checks(ctx))
        await _serve(app, settings, stack)
        tasks = _start_workers(ctx, bootstrap, options, stop) if options.role in ("up", "worker") else []
        if options.role in ("up", "scheduler"):
            tasks.append(_start_scheduler(ctx, stop))
        log.info("registry-workers %s ready on http://%s", options.role, settings.listen)
        await _wait(stop, tasks)


async def migrate(settings: Settings) -> None:
    """Bring the database schema to the latest revision."""
    engine = create_engine(settings.database_url)
    try:
        await _wait_for_database(engine)
        await upgrade_to_head(engine)
        log.info("database migrated")
    finally:
        await engine.dispose()


def _start_bundled_broker(settings: Settings, stack: contextlib.AsyncExitStack) -> str:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = BundledBroker(log_path=settings.data_dir / "broker.log")
    bootstrap = broker.start()
    stack.callback(broker.stop)
    log.info("started the bundled Kafka-protocol broker on %s (memory storage)", bootstrap)
    return bootstrap


async def _wait_for_database(engine: AsyncEngine) -> None:
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    while True:
        try:
            await ping(engine)
            return
        except TRANSIENT_DB_ERRORS as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1.0)


async def _serve(app: web.Application, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, settings.listen_host, settings.listen_port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: RW_LISTEN (listen): cannot listen on {settings.listen}: {exc.strerror}"
        ) from None


def _start_workers(
    ctx: ApiContext, bootstrap: str, options: RoleOptions, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    deps = FlowDependencies(ctx.settings, ctx.topics, ctx.engine, ctx.sessions, ctx.clock, ctx.secret_box)
    try:
        flows = build_flows(deps, options.worker_kinds)
    except ValueError as exc:
        raise ConfigError(f"invalid worker kinds: {exc}") from None
    runner_options = RunnerOptions.from_settings(ctx.settings.worker, single_writer=ctx.settings.uses_sqlite)
    dead_letters = DeadLetters(ctx.producer, ctx.topics.dead_letter)
    tasks = []
    for consumer in build_consumers(flows, ctx.settings.kafka.topic_prefix):
        runner = ConsumerRunner(consumer, ctx.settings.kafka, bootstrap, runner_options, dead_letters)
        tasks.append(asyncio.create_task(runner.run(stop), name=f"worker-{runner.name}"))
    for flow in flows:
        if flow.companion is not None:
            tasks.append(asyncio.create_task(flow.companion(stop), name=f"worker-{flow.kind}-companion"))
    return tasks


def _start_scheduler(ctx: ApiContext, stop: asyncio.Event) -> asyncio.Task[None]:
    dispatcher = Dispatcher(ctx.sessions, ctx.producer, ctx.topics.commands, ctx.clock)
    source = functools.partial(stored_schedules, ctx.sessions)
    return asyncio.create_task(run_scheduler(dispatcher, schedules(ctx.settings), stop, source), name="scheduler")


async def _wait(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Until a signal arrives or a worker fails; then let every worker drain."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    stopper.cancel()
    failed = [task for task in done if task is not stopper and task.exception() is not None]
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise RuntimeError(f"worker {failed[0].get_name()} failed") from failed[0].exception()
    log.info("stopped cleanly")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
