"""Errors of the registry client and the copy engine, and the retry policy that reads them.

::

    RegistryError(status, code, message)   an answer we cannot use; never retried as such
    ├── NotFound                           404: repository, manifest, blob or upload session unknown
    ├── Unauthorized                       401/403: credentials missing, wrong or insufficient
    ├── DigestMismatch                     content did not hash to its digest; the upload was aborted
    └── TransientRegistryError             no answer (reset, timeout), 408, 429, 5xx: retried with
                                           backoff, honouring ``retry_after``; also a
                                           ``workers.errors.TransientError``, so a job that ran out
                                           of attempts is retried by the runner as a whole

Only ``TransientRegistryError`` is retried (:meth:`RetryPolicy.retrying`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from workers.errors import TransientError


class RegistryError(Exception):
    """The registry answered ``status`` (``None``: no answer) with error ``code`` (OCI error code)."""

    def __init__(self, status: int | None, code: str | None, message: str):
        super().__init__(f"{status or 'no answer'} {code or ''}: {message}".replace("  ", " "))
        self.status = status
        self.code = code
        self.message = message


class NotFound(RegistryError):
    """404: the repository, manifest, blob or upload session does not exist."""


class Unauthorized(RegistryError):
    """401 or 403: the credentials are missing, wrong, or lack the needed access."""


class DigestMismatch(RegistryError):
    """Bytes did not hash to the digest that names them (or had the wrong size)."""

    def __init__(self, message: str):
        super().__init__(None, "DIGEST_INVALID", message)


class TransientRegistryError(RegistryError, TransientError):
    """Expected to heal: retry later, no sooner than ``retry_after`` seconds when given."""

    def __init__(self, status: int | None, code: str | None, message: str, retry_after: float | None = None):
        super().__init__(status, code, message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], what: str) -> RegistryError:
    """Translate an unexpected HTTP answer into the taxonomy; ``what`` names the request."""
    code, message = _first_error(body)
    text = f"{what}: {message}" if message else what
    if status == 404:
        return NotFound(status, code, text)
    if status in (401, 403):
        return Unauthorized(status, code, text)
    if status in (408, 429) or status >= 500:
        return TransientRegistryError(status, code, text, parse_retry_after(headers.get("Retry-After")))
    if code == "DIGEST_INVALID":
        return DigestMismatch(text)
    return RegistryError(status, code, text)


def _first_error(body: bytes) -> tuple[str | None, str]:
    try:
        errors = json.loads(body)["errors"]
        first = errors[0]
        return str(first.get("code")), str(first.get("message") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, body[:200].decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient registry errors.

    A ``Retry-After`` from the registry (429/503) replaces the backoff, capped at
    ``max_retry_after_s``; past that cap the error is raised instead of sleeping that long.
    """

    attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 20.0
    max_retry_after_s: float = 60.0

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.attempts), _RetryAfterBeyond(self.max_retry_after_s)),
            wait=self.wait_s,
            retry=retry_if_exception_type(TransientRegistryError),
            reraise=True,
        )

    def wait_s(self, state: RetryCallState) -> float:
        after = _retry_after(state)
        if after is not None:
            return after
        ceiling = min(self.max_s, self.initial_s * 2.0 ** (state.attempt_number - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class _RetryAfterBeyond(stop_base):
    """Stop when the registry asks us to come back later than we are willing to sleep."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        after = _retry_after(retry_state)
        return after is not None and after > self.limit_s


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.retry_after if isinstance(exc, TransientRegistryError) else None
