"""The retry and failover policy (workers/policy.py) and the dispatcher's own decisions
(workers/dispatch.py), with the clock and the randomness passed in."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from core.errors import ErrorKind, JobError, failover_type
from workers.calls import consecutive_failures_on
from workers.dispatch import (
    Ended,
    NotYet,
    cooldown_wake,
    failed_over_deployments,
    gate,
    lastingly_failed_deployments,
)
from workers.policy import FOR_KIND, Action, Fail, Failover, Retry, RetryPolicy, after_failure

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(retries_per_deployment=2, base_s=1.0, max_s=8.0, max_attempts_per_job=25)


def decide(kind: ErrorKind, **kw: Any) -> object:
    args: dict[str, Any] = {
        "failures_here": 1,
        "breaker_open": False,
        "retry_after": None,
        "deadline": None,
        "now": NOW,
        "policy": POLICY,
        "rng": random.Random(0),
    }
    args.update(kw)
    return after_failure(kind, "boom", **args)


def test_every_error_kind_has_a_policy() -> None:
    assert set(FOR_KIND) == set(ErrorKind)


@pytest.mark.parametrize("kind", [ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT, ErrorKind.PROVIDER_ERROR])
def test_a_retryable_failure_retries_the_same_deployment(kind: ErrorKind) -> None:
    assert isinstance(decide(kind), Retry)


def test_retries_per_deployment_then_failover() -> None:
    assert isinstance(decide(ErrorKind.TRANSIENT, failures_here=2), Retry)
    assert isinstance(decide(ErrorKind.TRANSIENT, failures_here=3), Failover)


def test_a_retry_whose_breaker_opened_fails_over_at_once() -> None:
    assert isinstance(decide(ErrorKind.TRANSIENT, breaker_open=True), Failover)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (ErrorKind.INVALID_REQUEST, JobError.INVALID_REQUEST),
        (ErrorKind.CONTENT_FILTERED, JobError.CONTENT_FILTERED),
    ],
)
def test_the_requests_own_fault_fails_the_job(kind: ErrorKind, error: JobError) -> None:
    assert decide(kind) == Fail(error, "boom")


@pytest.mark.parametrize(
    "kind",
    [ErrorKind.AUTH, ErrorKind.MISSING_CREDENTIALS, ErrorKind.CONTEXT_TOO_LONG, ErrorKind.QUOTA_EXHAUSTED],
)
def test_what_another_deployment_may_cure_fails_over(kind: ErrorKind) -> None:
    assert isinstance(decide(kind), Failover)


def test_an_override_wins_over_the_kinds_action() -> None:
    assert isinstance(decide(ErrorKind.TRANSIENT, action=Action.FAILOVER), Failover)
    assert isinstance(decide(ErrorKind.TRANSIENT, action=Action.RETRY), Retry)


def test_retry_after_is_honoured_with_up_to_ten_percent_jitter() -> None:
    for seed in range(20):
        decision = decide(ErrorKind.RATE_LIMITED, retry_after=2.0, rng=random.Random(seed))
        assert isinstance(decision, Retry)
        assert 2.0 <= decision.countdown <= 2.2


def test_backoff_is_exponential_with_equal_jitter_and_capped() -> None:
    rng = random.Random(1)
    for number, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        for _ in range(20):
            assert ceiling / 2 <= POLICY.backoff_seconds(number, None, rng) <= ceiling


def test_a_retry_that_would_land_after_the_deadline_fails_the_job() -> None:
    decision = decide(ErrorKind.RATE_LIMITED, retry_after=30.0, deadline=NOW + timedelta(seconds=10))
    assert isinstance(decision, Fail)
    assert decision.error is JobError.DEADLINE_EXCEEDED
    assert "rate_limited: boom" in decision.message
    assert isinstance(
        decide(ErrorKind.RATE_LIMITED, retry_after=1.0, deadline=NOW + timedelta(seconds=10)), Retry
    )


# ---------------------------------------------------------------- the dispatcher's decisions


def test_gate_lets_a_due_job_through() -> None:
    assert gate(deadline=None, not_before=None, attempt_count=0, now=NOW, policy=POLICY) is None


def test_gate_ends_a_job_past_its_deadline() -> None:
    held = gate(deadline=NOW, not_before=None, attempt_count=0, now=NOW, policy=POLICY)
    assert isinstance(held, Ended) and held.error is JobError.DEADLINE_EXCEEDED


def test_gate_holds_a_job_waiting_for_a_cooldown() -> None:
    held = gate(deadline=None, not_before=NOW + timedelta(seconds=3), attempt_count=1, now=NOW, policy=POLICY)
    assert held == NotYet(3.0)


def test_gate_caps_a_jobs_attempts() -> None:
    held = gate(deadline=None, not_before=None, attempt_count=25, now=NOW, policy=POLICY)
    assert isinstance(held, Ended) and held.error is JobError.ATTEMPTS_EXHAUSTED
    assert gate(deadline=None, not_before=None, attempt_count=24, now=NOW, policy=POLICY) is None


def test_cooldown_wakes_at_the_earliest_reopening() -> None:
    reopen = (NOW + timedelta(seconds=12)).timestamp()
    assert cooldown_wake(reopen, deadline=None, now=NOW, max_wait_s=900) == NOW + timedelta(seconds=12)
    assert cooldown_wake(None, deadline=None, now=NOW, max_wait_s=900) == NOW + timedelta(seconds=5)


def test_cooldown_past_the_deadline_or_the_cap_ends_the_job() -> None:
    reopen = (NOW + timedelta(seconds=12)).timestamp()
    late = cooldown_wake(reopen, deadline=NOW + timedelta(seconds=10), now=NOW, max_wait_s=900)
    assert isinstance(late, Ended) and late.error is JobError.ALL_DEPLOYMENTS_DOWN
    assert isinstance(cooldown_wake(reopen, deadline=None, now=NOW, max_wait_s=10), Ended)


def attempt(number: int, deployment: str, error_type: str | None, status: str = "failed") -> Any:
    return SimpleNamespace(number=number, deployment=deployment, error_type=error_type, status=status)


def test_failed_over_and_lasting_deployments_are_read_from_the_attempts() -> None:
    attempts = [
        attempt(1, "a", ErrorKind.TRANSIENT.value),
        attempt(2, "a", failover_type(ErrorKind.TRANSIENT)),
        attempt(3, "b", failover_type(ErrorKind.AUTH)),
        attempt(4, "c", failover_type(ErrorKind.CONTEXT_TOO_LONG)),
        attempt(5, "d", None, status="succeeded"),
    ]
    assert failed_over_deployments(attempts) == {"a", "b", "c"}
    assert lastingly_failed_deployments(attempts) == {"b", "c"}


def test_consecutive_failures_count_back_to_the_last_move() -> None:
    attempts = [
        attempt(1, "a", ErrorKind.TRANSIENT.value),
        attempt(2, "b", ErrorKind.TRANSIENT.value),
        attempt(3, "b", ErrorKind.RATE_LIMITED.value),
        attempt(4, "b", None, status="running"),
    ]
    assert consecutive_failures_on(attempts, "b") == 2
    assert consecutive_failures_on(attempts, "a") == 0
