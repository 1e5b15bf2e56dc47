"""Topic names and client options, derived once from ``KafkaSettings``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from workers.config import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """Every topic the service uses. Schemas: ``schemas/topics/*.yaml``."""

    image_events: str
    commands: str
    dead_letter: str

    @classmethod
    def from_prefix(cls, prefix: str) -> Topics:
        return cls(
            image_events=f"{prefix}.image-events.v1",
            commands=f"{prefix}.commands.v1",
            dead_letter=f"{prefix}.dead-letter.v1",
        )

    def all(self) -> tuple[str, ...]:
        return (self.image_events, self.commands, self.dead_letter)


def producer_options(settings: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence(),
        "linger_ms": 1,
        "request_timeout_ms": settings.request_timeout_ms,
        "max_request_size": 4 * 1024 * 1024,
    }


def consumer_options(settings: KafkaSettings, bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "fetch_min_bytes": settings.fetch_min_bytes,
        "request_timeout_ms": max(settings.request_timeout_ms, settings.session_timeout_ms + 5000),
        "isolation_level": "read_uncommitted",
    }


async def ensure_topics(settings: KafkaSettings, bootstrap: str, topics: Topics) -> None:
    """Create missing topics with the configured partitions. Safe to call from every replica.

    Raises ``KafkaError`` when the broker is unreachable.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=settings.request_timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor)
            for name in topics.all()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won the race
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


async def wait_for_broker(settings: KafkaSettings, bootstrap: str, topics: Topics, timeout_s: float = 60.0) -> None:
    """Retry ``ensure_topics`` until the broker answers; raises the last ``KafkaError`` on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await ensure_topics(settings, bootstrap, topics)
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker %s not ready (%s); retrying", bootstrap, exc)
            await asyncio.sleep(1.0)
