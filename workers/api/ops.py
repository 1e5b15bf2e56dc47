"""Operational endpoints of every role: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Check = Callable[[], Awaitable[None]]
CHECKS = web.AppKey("readiness_checks", dict[str, Check])
CHECK_TIMEOUT_S = 5.0


async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every dependency check (database, broker) passes within its timeout, else 503."""
    results: dict[str, str] = {}
    for name, check in request.app[CHECKS].items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in results.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": results}, status=200 if ready else 503
    )


async def metrics_endpoint(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_ops_routes(app: web.Application, checks: dict[str, Check]) -> None:
    app[CHECKS] = checks
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
