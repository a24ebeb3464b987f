"""The circuit breaker and health stats as pure transitions, with time injected."""

from __future__ import annotations

import json

import pytest

from routing.breaker import (
    BreakerPolicy,
    HealthState,
    admit,
    cooldown,
    record_failure,
    record_success,
    snapshot,
)

T0 = 1_700_000_000.0
POLICY = BreakerPolicy()


def fail(state: HealthState, times: int, now: float = T0, retry_after: float | None = None) -> HealthState:
    for _ in range(times):
        state = record_failure(state, now, POLICY, retry_after)
    return state


def test_closed_open_half_open_closed() -> None:
    state = fail(HealthState(), 4)
    assert state.breaker == "closed" and admit(state, T0, POLICY)[0]
    state = fail(state, 1)
    assert state.breaker == "open" and state.open_until == T0 + 10
    allowed, state = admit(state, T0 + 9.9, POLICY)
    assert not allowed and state.breaker == "open"
    assert snapshot(state, T0).breaker == "open"

    allowed, state = admit(state, T0 + 10, POLICY)
    assert allowed and state.breaker == "half_open" and state.probes_in_flight == 1
    for i in range(3):
        state = record_success(state, T0 + 11 + i, 200.0, POLICY)
        if i < 2:
            assert state.breaker == "half_open"
            assert admit(state, T0 + 11 + i, POLICY)[0]
    assert state.breaker == "closed" and state.open_until is None and state.trips == 0
    assert snapshot(state, T0 + 14).error_rate == 0.0  # the window was cleared on close


def test_probe_limit_and_lost_probes() -> None:
    state = fail(HealthState(), 5)
    admitted = []
    for _ in range(5):
        ok, state = admit(state, T0 + 10, POLICY)
        admitted.append(ok)
    assert admitted == [True, True, True, False, False]
    # Probes that never report back stop blocking after probe_timeout_s.
    ok, state = admit(state, T0 + 10 + POLICY.probe_timeout_s + 1, POLICY)
    assert ok and state.probes_in_flight == 1


def test_failed_probe_reopens_with_doubling_cooldown_up_to_the_cap() -> None:
    state = fail(HealthState(), 5)
    now = T0
    opened_for = []
    for _ in range(7):
        opened_for.append(state.open_until - now if state.open_until else None)
        now = state.open_until or now
        ok, state = admit(state, now, POLICY)
        assert ok and state.breaker == "half_open"
        state = record_failure(state, now, POLICY)
        assert state.breaker == "open"
    assert opened_for == [10, 20, 40, 80, 160, 300, 300]
    assert cooldown(1, POLICY) == 10 and cooldown(30, POLICY) == 300


def test_retry_after_sets_the_cooldown() -> None:
    state = fail(HealthState(), 5, retry_after=42.0)
    assert state.open_until == T0 + 42
    state = fail(HealthState(), 5, retry_after=10 * 3600)
    assert state.open_until == T0 + POLICY.retry_after_max_s
    # A failed probe with Retry-After uses it too.
    _, probing = admit(fail(HealthState(), 5), T0 + 10, POLICY)
    assert record_failure(probing, T0 + 10, POLICY, retry_after=7).open_until == T0 + 17


def test_error_rate_over_the_window_opens_without_consecutive_failures() -> None:
    state = HealthState()
    now = T0
    for i in range(10):  # S F F F F S F F F F: never 5 in a row, 80% errors
        now += 1
        state = record_success(state, now, 100, POLICY) if i % 5 == 0 else record_failure(state, now, POLICY)
        if i < 9:
            assert state.breaker == "closed", i
    assert state.breaker == "open"


def test_outcomes_outside_the_window_do_not_count() -> None:
    state = HealthState()
    for i in range(8):
        state = (
            record_failure(state, T0 + i * 0.1, POLICY) if i % 2 else record_success(state, T0, 100, POLICY)
        )
    later = T0 + POLICY.window_s + 5
    assert snapshot(state, T0 + 1).error_rate == 0.5
    assert snapshot(state, later).error_rate == 0.0
    state = fail(state, 3, now=later)  # 3 fresh failures < min_samples: stays closed
    assert state.breaker == "closed" and len(state.outcomes) == 3


def test_success_resets_consecutive_failures() -> None:
    state = record_success(fail(HealthState(), 4), T0, 100, POLICY)
    assert state.consecutive_failures == 0
    assert fail(state, 4).breaker == "closed"


def test_latency_ewma_and_percentiles() -> None:
    state = HealthState()
    for ms in (100.0, 200.0):
        state = record_success(state, T0, ms, POLICY)
    assert state.latency_ewma_ms == pytest.approx(0.2 * 200 + 0.8 * 100)
    for ms in range(1, 101):
        state = record_success(state, T0, float(ms), POLICY)
    health = snapshot(state, T0)
    assert len(state.latencies) == POLICY.latency_window
    assert health.latency_p50_ms == 50.0 and health.latency_p95_ms == 95.0
    assert health.samples == 102 and health.error_rate == 0.0
    empty = snapshot(HealthState())
    assert empty.latency_p50_ms is None and empty.breaker == "closed" and empty.samples == 0


def test_state_round_trips_through_json() -> None:
    state = record_success(fail(HealthState(), 5), T0 + 1, 123.0, POLICY)
    _, state = admit(state, T0 + 10, POLICY)
    restored = HealthState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    with pytest.raises(ValueError, match="breaker"):
        HealthState.from_dict({"breaker": "ajar"})


def test_traffic_ramps_back_after_a_recovery_and_restarts_on_reopening() -> None:
    policy = BreakerPolicy(ramp_s=30.0, ramp_floor=0.1)
    state = fail(HealthState(), 5)
    _, state = admit(state, T0 + 10, policy)
    for _ in range(3):
        state = record_success(state, T0 + 11, 200.0, policy)
    assert state.breaker == "closed" and state.recovered_at == T0 + 11
    assert snapshot(state, T0 + 11, policy).traffic_share == pytest.approx(0.1)
    assert snapshot(state, T0 + 26, policy).traffic_share == pytest.approx(0.55)
    assert snapshot(state, T0 + 41, policy).traffic_share == 1.0
    assert snapshot(state, None, policy).traffic_share == 1.0
    assert HealthState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    reopened = fail(state, 5, now=T0 + 20)
    assert reopened.recovered_at is None and snapshot(reopened, T0 + 20, policy).traffic_share == 1.0
    instant = BreakerPolicy(ramp_s=0.0)
    assert snapshot(state, T0 + 11, instant).traffic_share == 1.0
