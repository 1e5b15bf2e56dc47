"""Webhook delivery retries: response verdicts, Retry-After, the schedule and the circuit breaker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.config import TriggerSettings
from workers.triggers.retry import CircuitBreaker, Verdict, judge_response, next_delay, parse_retry_after

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SCHEDULE = TriggerSettings().retry_schedule_s
DELAYS = st.lists(st.floats(0, 100_000, allow_nan=False), min_size=1, max_size=12)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (299, Verdict.SUCCEEDED),
        (None, Verdict.RETRY),
        (301, Verdict.RETRY),
        (307, Verdict.RETRY),
        (400, Verdict.RETRY),
        (404, Verdict.RETRY),
        (429, Verdict.RETRY),
        (410, Verdict.GONE),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (100, Verdict.RETRY),
    ],
)
def test_judge_response(status: int | None, verdict: Verdict) -> None:
    assert judge_response(status) is verdict


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Sun, 22 Nov 2026 10:02:00 GMT", 120.0),
        ("Sun, 22 Nov 2026 11:00:00 +0100", 0.0),
        ("Sun, 22 Nov 2026 09:00:00 GMT", 0.0),  # in the past
        ("Sun, 22 Nov 2026 10:00:30 -0000", 30.0),  # no zone: read as UTC
        (None, None),
        ("", None),
        ("soon", None),
        ("12 parsecs", None),
        ("Sun, 99 Nov 2026 10:00:00 GMT", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_parse_retry_after_with_another_zone_for_now() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=8)))
    assert parse_retry_after("Sun, 22 Nov 2026 10:01:00 GMT", now) == 60.0
    assert parse_retry_after("Sun, 22 Nov 2026 10:01:00 GMT", NOW.replace(tzinfo=None)) == 60.0


def test_next_delay_walks_the_standard_webhooks_schedule() -> None:
    assert [next_delay(SCHEDULE, attempts) for attempts in range(len(SCHEDULE) + 1)] == [*SCHEDULE, None]


@pytest.mark.parametrize(
    ("attempts", "retry_after", "jitter", "expected"),
    [
        (1, None, 1.0, 5.5),
        (1, None, -1.0, 4.5),
        (2, None, 0.5, 315.0),
        (1, 60.0, 0.0, 60.0),  # a longer Retry-After wins
        (2, 60.0, 0.0, 300.0),  # a shorter one does not
        (1, 1e9, 0.0, 86_400.0),  # capped at 24 hours
        (1, -5.0, 0.0, 5.0),
        (10, 60.0, 0.0, None),  # Retry-After never extends an exhausted schedule
    ],
)
def test_next_delay_jitter_and_retry_after(
    attempts: int, retry_after: float | None, jitter: float, expected: float | None
) -> None:
    assert next_delay(SCHEDULE, attempts, retry_after_s=retry_after, jitter=jitter) == pytest.approx(expected)


@pytest.mark.parametrize(("attempts", "jitter"), [(-1, 0.0), (0, 1.5), (0, -1.01)])
def test_next_delay_rejects_bad_arguments(attempts: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        next_delay(SCHEDULE, attempts, jitter=jitter)


@given(DELAYS, st.integers(0, 20))
def test_next_delay_without_jitter_is_the_schedule(schedule: list[float], attempts: int) -> None:
    delay = next_delay(schedule, attempts)
    assert delay == (schedule[attempts] if attempts < len(schedule) else None)


@given(DELAYS, st.integers(0, 11), st.floats(-1, 1), st.one_of(st.none(), st.floats(-1e6, 1e12)))
def test_next_delay_stays_within_bounds(
    schedule: list[float], attempts: int, jitter: float, retry_after: float | None
) -> None:
    delay = next_delay(schedule, attempts, retry_after_s=retry_after, jitter=jitter)
    if attempts >= len(schedule):
        assert delay is None
        return
    assert delay is not None
    assert delay >= schedule[attempts] * 0.9 - 1e-9
    assert delay <= max(schedule[attempts] * 1.1, 86_400.0) + 1e-9


def test_breaker_opens_after_threshold_and_probes_once_after_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30.0)
    for moment in (0.0, 1.0):
        assert breaker.allows(moment)
        breaker.record_failure(moment)
    assert breaker.allows(2.0)
    assert breaker.retry_at(2.0) is None
    breaker.record_failure(2.0)
    assert not breaker.allows(2.0)
    assert not breaker.allows(31.9)
    assert breaker.retry_at(10.0) == 32.0
    assert breaker.allows(32.0)  # the half-open probe
    assert not breaker.allows(32.5)  # only one at a time
    breaker.record_success(33.0)
    assert breaker.allows(33.0) and breaker.allows(33.0)
    assert breaker.consecutive_failures == 0


def test_failed_probe_reopens_at_once() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0)
    breaker.record_failure(0.0)
    assert breaker.allows(10.0)
    breaker.record_failure(11.0)
    assert not breaker.allows(11.0)
    assert breaker.retry_at(11.0) == 21.0
    assert breaker.allows(21.0)


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0)
    breaker.record_failure(0.0)
    breaker.record_success(1.0)
    breaker.record_failure(2.0)
    assert breaker.allows(3.0)


def test_straggling_failures_while_open_do_not_extend_the_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0)
    breaker.record_failure(0.0)
    breaker.record_failure(5.0)
    assert breaker.retry_at(5.0) == 10.0


def test_a_lost_probe_is_replaced_after_the_probe_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, probe_timeout_s=60.0)
    breaker.record_failure(0.0)
    assert breaker.allows(10.0)
    assert not breaker.allows(69.0)
    assert breaker.retry_at(20.0) == 70.0
    assert breaker.allows(70.0)


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_breaker_rejects_bad_settings(threshold: int, cooldown: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, cooldown)


EVENTS = st.lists(st.tuples(st.sampled_from(["allow", "success", "failure"]), st.floats(0, 50)), max_size=40)


@given(st.integers(1, 5), st.floats(0.5, 20), EVENTS)
def test_breaker_properties(threshold: int, cooldown: float, events: list[tuple[str, float]]) -> None:
    breaker = CircuitBreaker(threshold, cooldown)
    now = 0.0
    for action, step in events:
        now += step
        if action == "allow":
            open_until = breaker.open_until
            allowed = breaker.allows(now)
            if open_until is not None and now < open_until:
                assert not allowed  # never while open
            if open_until is None:
                assert allowed  # always while closed
        elif action == "success":
            breaker.record_success(now)
            assert breaker.open_until is None and breaker.allows(now)
        else:
            breaker.record_failure(now)
        retry_at = breaker.retry_at(now)
        assert retry_at is None or retry_at >= now
        assert breaker.consecutive_failures < threshold or breaker.open_until is not None
