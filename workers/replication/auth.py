"""Registry authentication: anonymous, Basic, and the Bearer token challenge of the distribution spec.

How a request gets its ``Authorization`` header (:meth:`Authenticator.header`):

- a fresh cached Bearer token for the request's scope, when the registry is known to use tokens;
- otherwise, once the registry has sent a Bearer challenge, a token is fetched up front for the
  predicted scope (``repository:NAME:pull`` / ``pull,push``) so most requests never see a 401;
- otherwise preemptive Basic when credentials are configured, else nothing (anonymous).

A 401 carrying ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` is answered by
:meth:`Authenticator.answer`: fetch a token from the realm (with Basic credentials when configured,
anonymous otherwise) for the challenged scope, cache it under both the challenged and the
predicted scope until ``expires_in`` (default 60 s) minus a margin, and let the caller retry once.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from workers.replication.errors import TransientRegistryError, Unauthorized, error_from_response

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?=\s|$)")
DEFAULT_TOKEN_LIFETIME_S = 60.0


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header; ``scheme`` is lower-case, keys too."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The challenged scopes; several are separated by spaces (e.g. for a cross-repo mount)."""
        return tuple(self.params.get("scope", "").split())


def parse_challenges(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235): several challenges, quoted values with commas inside."""
    challenges: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(header):
        while pos < len(header) and header[pos] in " \t,":
            pos += 1
        if pos >= len(header):
            break
        param = _PARAM.match(header, pos)
        if param and challenges:
            quoted, plain = param.group(2), param.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain
            challenges[-1][1][param.group(1).lower()] = value
            pos = param.end()
            continue
        scheme = _SCHEME.match(header, pos)
        if scheme is None:
            break  # not a header we understand past this point
        challenges.append((scheme.group(1).lower(), {}))
        pos = scheme.end()
    return [Challenge(scheme, params) for scheme, params in challenges]


@dataclass
class _Token:
    value: str
    expires_at: float


def bearer_challenge(www_authenticate: str | None) -> Challenge | None:
    """The first Bearer challenge with a realm, if the header carries one."""
    for challenge in parse_challenges(www_authenticate or ""):
        if challenge.scheme == "bearer" and challenge.realm:
            return challenge
    return None


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Authenticator:
    """Authorization for one registry; shared by all requests of a ``RegistryClient``.

    Not thread-safe (one event loop). Token fetches for the same scope are serialised.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        ssl: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._basic = basic_header(username, password or "") if username else None
        self._ssl = ssl
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._bearer: Challenge | None = None  # the realm/service once the registry asked for tokens
        self._lock = asyncio.Lock()
        self.token_fetches = 0

    async def header(self, http: aiohttp.ClientSession, scope: str) -> dict[str, str]:
        """The ``Authorization`` header for a request needing ``scope``; may fetch a token (blocks).

        ``scope`` may hold several space-separated scopes (a cross-repository mount needs two).
        """
        token = self._fresh(scope)
        if token is None and self._bearer is not None:
            token = await self._fetch(http, self._bearer, tuple(scope.split()), scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        return {"Authorization": self._basic} if self._basic else {}

    async def answer(
        self, http: aiohttp.ClientSession, challenge: Challenge, scope: str, rejected: str | None = None
    ) -> None:
        """React to a 401 carrying a Bearer ``challenge``: fetch a token so the caller can retry once.

        ``rejected`` is the ``Authorization`` value the registry refused; when another request has
        already replaced that token, the new one is reused instead of fetching again. Blocks on the
        token endpoint. Raises ``Unauthorized`` when it refuses the credentials,
        ``TransientRegistryError`` when it cannot be reached.
        """
        self._bearer = challenge
        await self._fetch(http, challenge, challenge.scopes or tuple(scope.split()), scope, rejected=rejected or "")

    def _fresh(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None and token.expires_at > self._clock():
            return token.value
        return None

    async def _fetch(
        self,
        http: aiohttp.ClientSession,
        challenge: Challenge,
        scopes: tuple[str, ...],
        alias: str,
        rejected: str | None = None,
    ) -> str:
        """A token for ``scopes`` (cached under them and under ``alias``), fetched unless fresh.

        With ``rejected`` set, a cached token is reused only if it is not the rejected one.
        """
        key = " ".join(scopes)
        async with self._lock:
            cached = self._fresh(key)
            if cached is None or (rejected is not None and f"Bearer {cached}" == rejected):
                token = await self._request_token(http, challenge, scopes)
                cached = token.value
                self._tokens[key] = self._tokens[alias] = token
            else:
                self._tokens[alias] = self._tokens[key]
        return cached

    async def _request_token(
        self, http: aiohttp.ClientSession, challenge: Challenge, scopes: tuple[str, ...]
    ) -> _Token:
        assert challenge.realm is not None
        params = [("scope", scope) for scope in scopes if scope]
        if challenge.service:
            params.insert(0, ("service", challenge.service))
        headers = {"Authorization": self._basic} if self._basic else {}
        self.token_fetches += 1
        try:
            async with http.get(challenge.realm, params=params, headers=headers, ssl=self._ssl) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise error_from_response(resp.status, body, resp.headers, f"token from {challenge.realm}")
                document = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientRegistryError(None, None, f"token from {challenge.realm}: {exc!r}") from exc
        value = document.get("token") or document.get("access_token") if isinstance(document, dict) else None
        if not value:
            raise Unauthorized(200, None, f"token endpoint {challenge.realm} returned no token")
        lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_LIFETIME_S)
        # Renew a little early so a token does not expire between our check and the registry's.
        margin = min(10.0, lifetime / 4)
        return _Token(str(value), self._clock() + lifetime - margin)
