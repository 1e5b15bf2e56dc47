"""Producing to Kafka with acknowledgement, for the ingress, the scheduler and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from workers.config import KafkaSettings
from workers.runtime.kafka import producer_options


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be assumed written."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Producer(Protocol):
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None: ...


class KafkaProducer:
    """Sends messages and returns only after the broker acknowledged every one of them.

    ``publish`` may block up to ``timeout_s``; it raises ``BrokerUnavailable`` on any broker
    error or timeout, so callers answer 503 (ingress) or retry (workers).
    """

    def __init__(self, settings: KafkaSettings, bootstrap: str, timeout_s: float = 10.0):
        self._producer = AIOKafkaProducer(**producer_options(settings, bootstrap))
        self._timeout_s = timeout_s

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush and close; gives up after ``timeout_s`` (unacknowledged sends were already
        reported to their callers as failures, so nothing acknowledged is lost)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._producer.stop(), timeout_s)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                pending = [
                    await self._producer.send(m.topic, m.value, key=m.key, headers=list(m.headers) or None)
                    for m in messages
                ]
                await asyncio.gather(*pending)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"broker did not acknowledge: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        """Raises ``BrokerUnavailable`` when no broker metadata can be fetched."""
        try:
            async with asyncio.timeout(5):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(str(exc)) from exc
