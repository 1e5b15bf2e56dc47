"""HTTP to one registry: authorization, retries of transient failures, a per-registry connection cap.

Three ways to send, by what can be repeated:

- :meth:`Transport.call` — bytes or no body, answer read whole (manifests, JSON, HEAD): retried;
- :meth:`Transport.stream` — open a response and read it incrementally (blob downloads): the
  opening is retried, a failure while reading raises ``TransientRegistryError`` to the reader;
- :meth:`Transport.send` — a streamed body that cannot be replayed (blob uploads): never retried
  here; the upload code resumes or restarts the blob instead.

Every request holds one of ``max_connections`` slots while it is open, so however many copies run,
one registry sees at most that many concurrent requests (isolation per destination).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urljoin

import aiohttp
from multidict import CIMultiDictProxy

from workers.replication.auth import Authenticator, bearer_challenge
from workers.replication.errors import RetryPolicy, TransientRegistryError, error_from_response

Body: TypeAlias = bytes | AsyncIterable[bytes] | None
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Transport:
    """The HTTP side of a ``RegistryClient``; owns the session unless one was given."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 8,
        retry: RetryPolicy | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ):
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        self.retry = retry or RetryPolicy()
        self.auth = Authenticator(username, password, ssl=not insecure)
        self._ssl = not insecure
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_connections)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connector cap of its own: the slots bound us, and a cap here could deadlock a
            # copy within one registry (a download and an upload each holding a connection).
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (``/v2/...``) or of a ``Location`` the registry returned."""
        return urljoin(self.base_url + "/", path)

    async def call(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        ok: Collection[int] = (200,),
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        what: str = "",
    ) -> Reply:
        """Send a repeatable request and read the answer; transient failures are retried."""
        async for attempt in self.retry.retrying():
            with attempt:
                async with self._slots:
                    resp = await self._open(method, url, scope=scope, headers=headers, data=data, what=what)
                    return await self._read(resp, ok, what or f"{method} {url}")
        raise AssertionError("unreachable: tenacity reraises")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        ok: Collection[int] = (200,),
        headers: Mapping[str, str] | None = None,
        what: str = "",
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a response to read incrementally; holds a slot until the block exits."""
        what = what or f"{method} {url}"
        resp: aiohttp.ClientResponse | None = None
        async for attempt in self.retry.retrying():
            with attempt:
                await self._slots.acquire()  # per attempt: never hold a slot while backing off
                try:
                    resp = await self._open(method, url, scope=scope, headers=headers, data=None, what=what)
                    if resp.status not in ok:
                        await self._read(resp, ok, what)
                except BaseException:
                    self._slots.release()
                    raise
        assert resp is not None
        try:
            yield resp
        except _NETWORK_ERRORS as exc:
            raise TransientRegistryError(None, None, f"{what}: reading the body failed: {exc!r}") from exc
        finally:
            resp.release()
            self._slots.release()

    async def send(
        self,
        method: str,
        url: str,
        body: Body,
        *,
        scope: str,
        ok: Collection[int],
        headers: Mapping[str, str] | None = None,
        what: str = "",
    ) -> Reply:
        """Send once, with a body that may be a stream; nothing is retried."""
        async with self._slots:
            resp = await self._open(method, url, scope=scope, headers=headers, data=body, what=what)
            return await self._read(resp, ok, what or f"{method} {url}")

    async def _open(
        self, method: str, url: str, *, scope: str, headers: Mapping[str, str] | None, data: Body, what: str
    ) -> aiohttp.ClientResponse:
        replayable = data is None or isinstance(data, bytes)
        for attempt in (1, 2):
            auth = await self.auth.header(self.http, scope)
            try:
                resp = await self.http.request(
                    method, url, headers={**(headers or {}), **auth}, data=data, ssl=self._ssl,
                    allow_redirects=method in ("GET", "HEAD"),
                )  # fmt: skip
            except _NETWORK_ERRORS as exc:
                raise TransientRegistryError(None, None, f"{what or method + ' ' + url}: {exc!r}") from exc
            challenge = bearer_challenge(resp.headers.get("WWW-Authenticate")) if resp.status == 401 else None
            if challenge is None or attempt == 2:
                return resp  # the caller reports a 401 without a Bearer challenge
            resp.release()
            await self.auth.answer(self.http, challenge, scope, rejected=auth.get("Authorization"))
            if not replayable:
                raise TransientRegistryError(401, "UNAUTHORIZED", f"{what}: token renewed; the body must be re-sent")
        raise AssertionError("unreachable")

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, ok: Collection[int], what: str) -> Reply:
        async with resp:
            try:
                body = await resp.read()
            except _NETWORK_ERRORS as exc:
                raise TransientRegistryError(None, None, f"{what}: reading the answer failed: {exc!r}") from exc
            if resp.status not in ok:
                raise error_from_response(resp.status, body, resp.headers, what)
            return Reply(resp.status, resp.headers, body)
