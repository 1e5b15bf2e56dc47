"""A ``FaultyProxy`` that also misbehaves at random, at seeded rates: 5xx, resets, slow reads.

::

    async with ChaosProxy(registry.url, seed=7, rates=ChaosRates(error=0.08, reset=0.05, slow=0.1)) as proxy:
        proxy.chaos = True                 # off until switched on; scripted faults always apply
        ...
        proxy.injected                     # Counter: "5xx", "reset", "answer dropped", "slow"

For every request without a scripted fault one draw decides: an injected 5xx (the registry
never sees the request); a reset — most requests with a body are cut after a random part
of it (mid-blob), the others are forwarded whole and the connection is cut instead of relaying
the registry's answer (done, but the client cannot know); a slow exchange — the request body is
read from the client slowly and the answer starts late; or nothing. The draws come from one
``random.Random(seed)`` in arrival order, so the rates and the sequence are fixed while the
request each draw lands on depends on scheduling.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.support.faulty_proxy import Exchange, Fault, FaultyProxy

ERROR_STATUSES = (500, 502, 503, 504)
_ANY = re.compile("")  # drawn faults apply to the one request they were drawn for


@dataclass(frozen=True)
class ChaosRates:
    error: float = 0.0  # answer 5xx without forwarding
    reset: float = 0.0  # cut the connection: mid-body, or after the registry answered
    slow: float = 0.0  # slow body reads and a late answer
    slow_piece_s: float = 0.01  # pause per 64 KiB of request body
    slow_start_s: float = 0.3  # pause before the answer starts


@dataclass(frozen=True)
class _Plan:
    fault: Fault | None = None
    slow: bool = False
    drop_answer: bool = False


_NO_PLAN = _Plan()
_PLAN: ContextVar[_Plan | None] = ContextVar("chaos_plan", default=None)


def _plan() -> _Plan:
    """What was drawn for the request this task serves (the writer task of a body inherits it)."""
    return _PLAN.get() or _NO_PLAN


class ChaosProxy(FaultyProxy):
    """Scripted faults first (``fail``, ``reset``), then, with ``chaos`` on, seeded random ones."""

    def __init__(self, target: str, *, seed: int, rates: ChaosRates, port: int | None = None):
        super().__init__(target, port)
        self.rates = rates
        self.chaos = False
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)

    def _draw(self, request: web.Request) -> _Plan:
        roll = self._random.random()
        rates = self.rates
        if roll < rates.error:
            self.injected["5xx"] += 1
            status = self._random.choice(ERROR_STATUSES)
            return _Plan(Fault(None, _ANY, 1, status=status))
        if roll < rates.error + rates.reset:
            length = request.content_length or 0
            if length > 1 and self._random.random() < 0.7:
                self.injected["reset"] += 1
                after = self._random.randrange(length)
                return _Plan(Fault(None, _ANY, 1, reset_after=after, during="request"))
            self.injected["answer dropped"] += 1
            return _Plan(drop_answer=True)
        if roll < rates.error + rates.reset + rates.slow:
            self.injected["slow"] += 1
            return _Plan(slow=True)
        return _Plan()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        scripted = any(f.remaining > 0 and f.matches(request.method, request.path_qs) for f in self._faults)
        plan = self._draw(request) if self.chaos and not scripted else _NO_PLAN
        token = _PLAN.set(plan)
        try:
            return await super()._handle(request)
        finally:
            _PLAN.reset(token)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        return super()._take_fault(method, path) or _plan().fault

    def _request_body(self, request: web.Request, entry: Exchange, reset_after: int | None) -> AsyncIterator[bytes]:
        pieces = super()._request_body(request, entry, reset_after)
        return self._throttled(pieces) if _plan().slow else pieces

    async def _throttled(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for piece in pieces:
            await asyncio.sleep(self.rates.slow_piece_s)
            yield piece

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, entry: Exchange, reset_after: int | None
    ) -> web.StreamResponse:
        plan = _plan()
        if plan.drop_answer:  # the registry did the work; the client never learns it
            await upstream.read()
            entry.fault = "answer dropped"
            return self._abort(request)
        if plan.slow:
            entry.fault = "slow"
            await asyncio.sleep(self.rates.slow_start_s)
        return await super()._relay(request, upstream, entry, reset_after)
