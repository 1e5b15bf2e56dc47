"""Run the real service in-process (``run_role``) for tests, and talk to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from tests.support.services import free_port
from workers.config import Settings
from workers.roles import RoleOptions, run_role

INGRESS_TOKEN = "test-ingress-token"
ADMIN_AK = "TESTADMINACCESSKEY01"
ADMIN_SK = "test-admin-secret-key"
DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v1+json"
SECRET_KEY = Fernet.generate_key().decode()  # encrypts stored secrets in tests (never under ./data)


def service_settings(database_url: str, bootstrap: str, topic_prefix: str, **extra: Any) -> Settings:
    document: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "database_url": database_url,
        "ingress_token": INGRESS_TOKEN,
        "admin_access_key": ADMIN_AK,
        "admin_secret_key": ADMIN_SK,
        "kafka": {
            "bootstrap": bootstrap,
            "idempotence": False,  # the bundled broker has no InitProducerId
            "topic_prefix": topic_prefix,
            "partitions": 4,
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 300,
        },
        "worker": {"commit_interval_ms": 100, "drain_timeout_s": 5},
        "secrets": {"keys": [SECRET_KEY]},
    }
    document.update(extra)
    return Settings.model_validate(document)


@dataclass
class RunningService:
    settings: Settings
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen}"


@contextlib.asynccontextmanager
async def running_service(settings: Settings, role: str = "up") -> AsyncIterator[RunningService]:
    """Starts ``role`` in this event loop, waits for /readyz, stops it (draining) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_role(settings, RoleOptions(role=role), stop))
    service = RunningService(settings, task)
    try:
        await wait_ready(service)
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 45)


async def wait_ready(service: RunningService, limit_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    async with aiohttp.ClientSession() as http:
        while True:
            if service.task.done():
                service.task.result()  # raises the start-up error
                raise RuntimeError("service exited during start-up")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{service.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("service did not become ready")
            await asyncio.sleep(0.1)


async def wait_for(predicate: Any, limit_s: float = 20.0, interval: float = 0.1) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {limit_s}s (last: {result!r})")
        await asyncio.sleep(interval)
