"""A local HTTP receiver for webhook deliveries: records every request, answers as scripted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request arrived


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class WebhookReceiver:
    """``async with WebhookReceiver() as r``: POSTs to any path are recorded in ``r.received``.

    ``r.script([Answer(503), Answer(200)])`` answers the next requests in that order, then
    ``r.default`` (200 at once unless changed).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: list[Answer] = []
        self.default = Answer()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, answers: Sequence[Answer]) -> None:
        self._script = list(answers)

    def answer_for(self, request: web.Request) -> Answer:
        """The answer once the script is used up: ``default``; a subclass may decide per request."""
        return self.default

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout_s)
        return list(self.received)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        answer = self._script.pop(0) if self._script else self.answer_for(request)
        async with self._arrived:
            self.received.append(Received(request.path, dict(request.headers), body, time.time()))
            self._arrived.notify_all()
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(status=answer.status, headers=answer.headers, text="ok")

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
