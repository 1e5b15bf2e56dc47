"""The webhook HTTP client: SSRF-guarded connections, no redirects, bounded time.

One ``aiohttp.ClientSession`` for targets that verify TLS and one for ``skip_cert_verify``
targets, both connecting only to addresses the guard accepted at connect time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from workers.config import TriggerSettings
from workers.triggers.ssrf import ForbiddenTarget, guarded_connector, parse_allowed

DETAIL_BYTES = 512


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer (refused, timed out, reset)
    latency_ms: int
    retry_after: str | None = None
    error: str | None = None
    body: str = ""

    def describe(self) -> str:
        if self.status is None:
            return f"no answer: {self.error}"
        text = f"HTTP {self.status}"
        return f"{text}: {self.body}" if self.body and not 200 <= self.status < 300 else text


class WebhookClient:
    """Sends one POST per call; never raises for network errors (they become a ``SendResult``)."""

    def __init__(self, settings: TriggerSettings):
        self._settings = settings
        self._allowed = parse_allowed(settings.allowed_networks)
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, verify_tls: bool) -> SendResult:
        session = self._session(verify_tls)
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                snippet = (await response.content.read(DETAIL_BYTES)).decode("utf-8", "replace")
                return SendResult(response.status, _ms(started), response.headers.get("Retry-After"), body=snippet)
        except ForbiddenTarget as exc:
            return SendResult(None, _ms(started), error=f"refused by the SSRF guard: {exc}")
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            reason = f"refused by the SSRF guard: {cause}" if isinstance(cause, ForbiddenTarget) else str(exc)
            return SendResult(None, _ms(started), error=reason)
        except TimeoutError:
            return SendResult(None, _ms(started), error=f"timed out after {self._settings.total_timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult(None, _ms(started), error=f"{type(exc).__name__}: {exc}")

    def _session(self, verify_tls: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(verify_tls)
        if session is None or session.closed:
            timeout = aiohttp.ClientTimeout(
                total=self._settings.total_timeout_s, sock_connect=self._settings.connect_timeout_s
            )
            connector = guarded_connector(self._allowed, limit_per_host=0, ssl=verify_tls)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
            self._sessions[verify_tls] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
