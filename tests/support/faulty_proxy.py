"""A fault-injecting HTTP proxy for tests: sits in front of a real registry and misbehaves on cue.

::

    async with FaultyProxy(registry.url) as proxy:
        proxy.fail(2, status=503, method="POST", path=r"/blobs/uploads/$")   # next 2 matching → 503
        proxy.reset(method="PATCH", path=r"/blobs/uploads/", after_bytes=64 * 1024)  # cut mid-upload
        proxy.reset(method="GET", path=r"/blobs/sha256:", after_bytes=1000, during="response")
        client = RegistryClient(proxy.url, ...)
        ...
        assert [e.status for e in proxy.matching("PUT", r"/manifests/")] == [503, 201]

Patterns are searched (``re.search``) in the path with its query string. Faults apply to the next
matching requests (``skip`` lets that many matches through first) and are
used up one match at a time. A *status* fault answers without contacting the registry (the request
body is read and dropped). A *reset* fault forwards ``after_bytes`` bytes of the request body (or of
the response body with ``during="response"``) and then aborts the client's connection — with
``after_bytes=0`` on a request, the registry never sees it. The ``Host`` header is passed through, so
the ``Location`` URLs the registry builds point back at the proxy. Every exchange is logged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import aiohttp
from aiohttp import web

from tests.support.services import free_port

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip
READ_SIZE = 64 * 1024
INJECTED_ERROR = b'{"errors":[{"code":"UNAVAILABLE","message":"injected by FaultyProxy"}]}'


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    remaining: int
    skip: int = 0
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    reset_after: int | None = None
    during: Literal["request", "response"] = "request"

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and self.path.search(path) is not None


@dataclass
class Exchange:
    """One request as the proxy saw it. ``status`` is ``None`` when the connection was reset."""

    method: str
    path: str  # with the query string
    headers: Mapping[str, str]
    request_bytes: int = 0  # body bytes forwarded to the registry
    response_bytes: int = 0  # body bytes delivered to the client
    status: int | None = None
    fault: str | None = None

    @property
    def content_range(self) -> str | None:
        return self.headers.get("Content-Range")


class _Reset(Exception):
    pass


class FaultyProxy:
    """An aiohttp server on 127.0.0.1 forwarding everything to ``target`` (e.g. a registry URL)."""

    def __init__(self, target: str, port: int | None = None):
        self.target = target.rstrip("/")
        self.port = port or free_port()
        self.log: list[Exchange] = []
        self._faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._client = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60))
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------ control

    def fail(
        self,
        times: int = 1,
        *,
        status: int = 503,
        method: str | None = None,
        path: str = ".*",
        headers: Mapping[str, str] | None = None,
        skip: int = 0,
    ) -> None:
        """Answer ``status`` (with ``headers``, e.g. ``Retry-After``) to the next ``times`` matches."""
        self._faults.append(Fault(method, re.compile(path), times, skip, status=status, headers=dict(headers or {})))

    def reset(
        self,
        times: int = 1,
        *,
        after_bytes: int = 0,
        method: str | None = None,
        path: str = ".*",
        during: Literal["request", "response"] = "request",
        skip: int = 0,
    ) -> None:
        """Abort the connection of the next ``times`` matches after ``after_bytes`` body bytes."""
        self._faults.append(Fault(method, re.compile(path), times, skip, reset_after=after_bytes, during=during))

    def clear(self) -> None:
        """Drop the faults not used up yet (the log stays)."""
        self._faults.clear()

    def matching(self, method: str | None = None, path: str = ".*") -> list[Exchange]:
        pattern = re.compile(path)
        return [e for e in self.log if (method is None or e.method == method) and pattern.search(e.path)]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, path):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                return fault
        return None

    # ------------------------------------------------------------------------------------ forwarding

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._take_fault(request.method, request.path_qs)
        entry = Exchange(request.method, request.path_qs, dict(request.headers))
        self.log.append(entry)
        if fault is not None and fault.status is not None:
            entry.fault = f"status {fault.status}"
            async for _ in request.content.iter_chunked(READ_SIZE):
                pass
            entry.status = fault.status
            headers = {"Content-Type": "application/json", **fault.headers}
            return web.Response(status=fault.status, headers=headers, body=INJECTED_ERROR)
        request_reset = fault.reset_after if fault is not None and fault.during == "request" else None
        response_reset = fault.reset_after if fault is not None and fault.during == "response" else None
        if fault is not None:
            entry.fault = f"reset after {fault.reset_after} {fault.during} bytes"
        if request_reset == 0:
            return self._abort(request)
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body: AsyncIterator[bytes] | None = None
        if request.body_exists:
            body = self._request_body(request, entry, request_reset)
        try:
            async with self._client.request(
                request.method, self.target + request.path_qs, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                return await self._relay(request, upstream, entry, response_reset)
        except (_Reset, aiohttp.ClientError):
            if request_reset is None:
                raise
            return self._abort(request)

    async def _request_body(
        self, request: web.Request, entry: Exchange, reset_after: int | None
    ) -> AsyncIterator[bytes]:
        async for piece in request.content.iter_chunked(READ_SIZE):
            if reset_after is not None and entry.request_bytes + len(piece) >= reset_after:
                keep = reset_after - entry.request_bytes
                if keep:
                    entry.request_bytes += keep
                    yield piece[:keep]
                raise _Reset()
            entry.request_bytes += len(piece)
            yield piece

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, entry: Exchange, reset_after: int | None
    ) -> web.StreamResponse:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        if "Location" in headers and headers["Location"].startswith(self.target):
            headers["Location"] = self.url + headers["Location"][len(self.target) :]
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        async for piece in upstream.content.iter_chunked(READ_SIZE):
            if reset_after is not None and entry.response_bytes + len(piece) >= reset_after:
                keep = reset_after - entry.response_bytes
                await response.write(piece[:keep])
                entry.response_bytes += keep
                self._abort(request)
                return response
            await response.write(piece)
            entry.response_bytes += len(piece)
        await response.write_eof()
        entry.status = upstream.status
        return response

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never delivered: the connection is gone
