"""When to retry a webhook delivery, and when to stop calling a target at all.

Pure decision core, no I/O and no clock reads: the delivery shell passes in the HTTP status,
the ``Retry-After`` header, the current time and a random jitter, and acts on the answers.

- :func:`judge_response` classifies one attempt (Standard Webhooks: every non-2xx is retried,
  410 Gone disables the target).
- :func:`next_delay` walks ``TriggerSettings.retry_schedule_s``; ``None`` means the schedule is
  exhausted and the delivery is dead-lettered as :attr:`Verdict.FAILED`.
- :class:`CircuitBreaker` is kept per target (``breaker_failures``, ``breaker_cooldown_s``) so
  one dead receiver stops costing a connection attempt per event.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

MAX_RETRY_AFTER_S = 86_400.0  # a receiver may slow us down, but not park a delivery for days
JITTER_FRACTION = 0.1
_DELTA_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class Verdict(StrEnum):
    """The outcome of a delivery attempt; FAILED is only reached when retries run out."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    GONE = "gone"
    FAILED = "failed"


def judge_response(status: int | None) -> Verdict:
    """Classify an attempt by HTTP status; None is a connection error or timeout.

    2xx succeeds; 410 means the receiver is gone for good (disable the target); everything
    else, including 3xx (redirects are not followed), is retried.
    """
    if status is not None and 200 <= status <= 299:
        return Verdict.SUCCEEDED
    if status == 410:
        return Verdict.GONE
    return Verdict.RETRY


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    Past dates and negative numbers give 0; an absent or unparseable header gives None.
    A date without a zone, and a naive ``now``, are read as UTC.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return max(0.0, float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, (_as_utc(when) - _as_utc(now)).total_seconds())


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def next_delay(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    retry_after_s: float | None = None,
    jitter: float = 0.0,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is exhausted.

    ``schedule[i]`` is the delay before attempt ``i + 1``. ``jitter`` in [-1, 1] comes from the
    caller's random source and scales the delay by ``1 + 0.1 * jitter``. A ``Retry-After``
    longer than that wins, capped at 24 hours; it never extends the schedule. Raises
    ValueError for a negative ``attempts_made`` or a jitter outside [-1, 1].
    """
    if attempts_made < 0:
        raise ValueError(f"attempts_made must be >= 0, got {attempts_made}")
    if not -1.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [-1, 1], got {jitter}")
    if attempts_made >= len(schedule):
        return None
    delay = max(0.0, schedule[attempts_made] * (1.0 + JITTER_FRACTION * jitter))
    if retry_after_s is not None:
        delay = max(delay, min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S))
    return delay


@dataclass
class CircuitBreaker:
    """Per-target breaker: closed → open after ``failure_threshold`` consecutive failures →
    half-open after ``cooldown_s`` (one probe at a time) → closed on success, open on failure.

    Times are seconds on the caller's monotonic clock. ``allows`` claims the half-open probe,
    so the caller must report its outcome with ``record_success`` or ``record_failure``; a
    probe unreported for ``probe_timeout_s`` is presumed lost and another is allowed.
    Not thread-safe: keep one per target inside one event loop.
    """

    failure_threshold: int
    cooldown_s: float
    probe_timeout_s: float = 600.0
    consecutive_failures: int = 0
    open_until: float | None = None
    probe_started: float | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if self.cooldown_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("cooldown_s and probe_timeout_s must be positive")

    def allows(self, now: float) -> bool:
        """Whether a request may be sent now; in half-open state this claims the single probe."""
        if self.open_until is None:
            return True
        if now < self.open_until:
            return False
        if self.probe_started is not None and now < self.probe_started + self.probe_timeout_s:
            return False
        self.probe_started = now
        return True

    def record_success(self, now: float) -> None:
        """A request succeeded: close the breaker and forget past failures."""
        self.consecutive_failures = 0
        self.open_until = None
        self.probe_started = None

    def record_failure(self, now: float) -> None:
        """A request failed: open after the threshold, or reopen at once if half-open."""
        self.consecutive_failures += 1
        half_open = self.open_until is not None and now >= self.open_until
        if half_open or (self.open_until is None and self.consecutive_failures >= self.failure_threshold):
            self.open_until = now + self.cooldown_s
            self.probe_started = None

    def retry_at(self, now: float) -> float | None:
        """When the breaker will next allow a request; None when it is closed."""
        if self.open_until is None:
            return None
        if now < self.open_until:
            return self.open_until
        if self.probe_started is not None:
            return max(now, self.probe_started + self.probe_timeout_s)
        return now
