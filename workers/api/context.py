"""What request handlers share: settings, the database, the producer. Built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from workers.config import Settings
from workers.runtime.kafka import Topics
from workers.runtime.producer import KafkaProducer
from workers.secrets import SecretBox


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    producer: KafkaProducer
    topics: Topics
    secret_box: SecretBox
    clock: Callable[[], datetime] = utc_now

    @property
    def registry_host(self) -> str:
        """host[:port] of the local region's registry, for pull paths in API answers."""
        local = self.settings.local_registry()
        return urlsplit(local.registry).netloc if local else ""


CONTEXT = web.AppKey("context", ApiContext)


def api_context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
