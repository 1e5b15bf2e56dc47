"""AK/SK authentication of the management API (aiohttp glue around ``workers.api.aksk``).

``aksk_middleware`` runs on every request. Paths under a protected prefix (``/v2/``,
``/v3/`` by default) must carry an ``SDK-HMAC-SHA256`` signature, as the official Huawei Cloud
SDKs send; on success the caller's ``Principal`` is stored under ``PRINCIPAL_KEY``
(read it with ``principal_of``). Other
paths pass through untouched.

Every failure answers HTTP 401 with the usual ``{"error_code", "error_msg"}`` body:

* ``APIGW.0301`` - missing or malformed ``Authorization``/``X-Sdk-Date``, unsupported
  algorithm, a signed header absent, ``host`` not signed, or a signature mismatch;
* ``APIGW.0303`` - the access key is unknown or disabled;
* ``APIGW.0304`` - ``X-Sdk-Date`` is more than 15 minutes from the server clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from workers.api.aksk import AuthenticationError, SignedRequest, authorization_of, verify
from workers.api.errors import Handler, error_response

CODE_UNKNOWN_KEY = "APIGW.0303"


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request."""

    user_id: str
    user_name: str
    access_key: str


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


@dataclass(frozen=True)
class KeyRecord:
    """An access key, its secret and its owner."""

    access_key: str
    secret_key: str
    principal: Principal
    enabled: bool = True


class KeyResolver(Protocol):
    """Looks up access keys; called once per protected request."""

    async def resolve(self, access_key: str) -> KeyRecord | None:
        """The record for ``access_key``, or ``None`` if there is none."""
        ...


class StaticKeyResolver:
    """A fixed set of keys held in memory (the bootstrap admin key)."""

    def __init__(self, records: Mapping[str, KeyRecord] | None = None):
        self._records = dict(records or {})

    @classmethod
    def of(cls, *records: KeyRecord) -> StaticKeyResolver:
        return cls({r.access_key: r for r in records})

    async def resolve(self, access_key: str) -> KeyRecord | None:
        return self._records.get(access_key)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _signed_request(request: web.Request, body: bytes) -> SignedRequest:
    target = request.raw_path  # as sent, still percent-encoded: what the client signed
    if not target.startswith("/"):  # absolute-form request target
        target = request.rel_url.raw_path
    path, _, _ = target.partition("?")
    return SignedRequest(
        method=request.method,
        path=path,
        query=list(request.query.items()),
        headers=request.headers,
        body=body,
    )


async def authenticate(request: web.Request, resolver: KeyResolver, now: datetime) -> Principal:
    """Verify ``request``'s AK/SK signature; raises ``AuthenticationError`` with a 401 code."""
    body = await request.read()  # aiohttp caches the body; handlers can read it again
    signed = _signed_request(request, body)
    auth = authorization_of(signed)
    record = await resolver.resolve(auth.access_key)
    if record is None:
        raise AuthenticationError(CODE_UNKNOWN_KEY, f"unknown access key {auth.access_key[:64]!r}")
    if not record.enabled:
        raise AuthenticationError(CODE_UNKNOWN_KEY, f"access key {auth.access_key[:64]!r} is disabled")
    verify(signed, record.secret_key, now)
    return record.principal


def principal_of(request: web.Request) -> Principal | None:
    """The ``Principal`` the middleware stored on ``request``, if it authenticated one."""
    principal = request.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None


def aksk_middleware(
    resolver: KeyResolver,
    *,
    protected_prefixes: tuple[str, ...] = ("/v2/", "/v3/"),
    clock: Callable[[], datetime] = _utc_now,
) -> Middleware:
    """An aiohttp middleware requiring AK/SK signatures under ``protected_prefixes``.

    The prefix test uses the decoded path the router matches (``request.path``), so a
    percent-encoded spelling such as ``/v2%2Fping`` cannot reach a protected route unsigned.
    The verified request is rebuilt from the raw target (``request.raw_path``), which is
    what the client signed. Reads the whole body first (aiohttp caches it for the handler).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(protected_prefixes):
            return await handler(request)
        try:
            request[PRINCIPAL_KEY] = await authenticate(request, resolver, clock())
        except AuthenticationError as exc:
            return error_response(401, exc.code, exc.message)
        return await handler(request)

    return middleware
