"""Per-deployment health as pure transitions: the circuit breaker, latency stats, error rate.

Nothing here does I/O or reads a clock: every function takes the current state and `now`
(epoch seconds) and returns a new state. `workers/health_store.py` keeps one `HealthState`
per deployment in Redis and applies these transitions atomically; routing reads the
`DeploymentHealth` snapshot.

Breaker: closed -> open after `failure_threshold` consecutive failures, or an error rate
above `error_rate_threshold` over at least `min_samples` outcomes in the sliding window.
Open lasts the provider's Retry-After when given, else `cooldown_base_s` doubling with each
reopening without a close in between, up to `cooldown_max_s`. Once the cooldown has passed
`admit` moves it to half_open, which lets at most `probe_limit` calls be in flight; after
`probe_successes` successful probes it closes (the error window is cleared), and any failed
probe reopens it with a doubled cooldown. A closed breaker ramps traffic back: its
`traffic_share` rises linearly from `ramp_floor` to all of it over `ramp_s` (routing keeps
the deployment's rank for that share of jobs and puts it behind the others for the rest).
Callers decide which errors count: an invalid request is not the deployment's fault.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

BreakerStatus = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class DeploymentHealth:
    """A snapshot of one deployment's shared health, as routing reads it."""

    breaker: BreakerStatus = "closed"
    open_until: float | None = None  # epoch seconds
    latency_ewma_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    error_rate: float = 0.0
    consecutive_failures: int = 0
    samples: int = 0  # latency observations so far
    traffic_share: float = 1.0  # below 1 while ramping back after a recovery


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5  # consecutive failures that open the breaker
    error_rate_threshold: float = 0.5  # open when the window's error rate exceeds this ...
    min_samples: int = 10  # ... over at least this many outcomes
    window_s: float = 60.0  # sliding window of outcomes
    max_outcomes: int = 200  # the window is also bounded in length
    cooldown_base_s: float = 10.0
    cooldown_max_s: float = 300.0
    retry_after_max_s: float = 3600.0  # a provider's Retry-After is honoured up to this
    probe_limit: int = 3  # calls in flight while half_open
    probe_successes: int = 3  # successful probes that close the breaker
    probe_timeout_s: float = 60.0  # a probe not reported by then is presumed lost
    ewma_alpha: float = 0.2
    latency_window: int = 100  # recent latencies kept for p50/p95
    ramp_s: float = 30.0  # after a recovery, traffic returns over this long ...
    ramp_floor: float = 0.1  # ... starting from this share


DEFAULT_POLICY = BreakerPolicy()


@dataclass(frozen=True)
class HealthState:
    """Everything the store keeps for one deployment; `to_dict`/`from_dict` round-trip via JSON."""

    breaker: BreakerStatus = "closed"
    open_until: float | None = None
    trips: int = 0  # openings since the last close; sets the cooldown's doubling
    consecutive_failures: int = 0
    probes_in_flight: int = 0
    probe_successes: int = 0
    last_probe_at: float | None = None
    latency_ewma_ms: float | None = None
    latencies: tuple[float, ...] = ()
    samples: int = 0
    outcomes: tuple[tuple[float, bool], ...] = ()  # (when, ok), oldest first
    recovered_at: float | None = None  # when the breaker last closed after probing

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latencies"] = list(self.latencies)
        data["outcomes"] = [[t, ok] for t, ok in self.outcomes]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HealthState:
        breaker = data.get("breaker", "closed")
        if breaker not in ("closed", "open", "half_open"):
            raise ValueError(f"unknown breaker state {breaker!r}")
        return cls(
            breaker=breaker,
            open_until=_opt_float(data.get("open_until")),
            trips=int(data.get("trips", 0)),
            consecutive_failures=int(data.get("consecutive_failures", 0)),
            probes_in_flight=int(data.get("probes_in_flight", 0)),
            probe_successes=int(data.get("probe_successes", 0)),
            last_probe_at=_opt_float(data.get("last_probe_at")),
            latency_ewma_ms=_opt_float(data.get("latency_ewma_ms")),
            latencies=tuple(float(x) for x in data.get("latencies", ())),
            samples=int(data.get("samples", 0)),
            outcomes=tuple((float(t), bool(ok)) for t, ok in data.get("outcomes", ())),
            recovered_at=_opt_float(data.get("recovered_at")),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def cooldown(trips: int, policy: BreakerPolicy, retry_after: float | None = None) -> float:
    """Seconds to stay open on the `trips`-th opening (1-based), or the provider's Retry-After."""
    if retry_after is not None and retry_after > 0:
        return min(float(retry_after), policy.retry_after_max_s)
    return float(min(policy.cooldown_base_s * 2 ** max(trips - 1, 0), policy.cooldown_max_s))


def _window(
    outcomes: tuple[tuple[float, bool], ...], now: float, policy: BreakerPolicy
) -> tuple[tuple[float, bool], ...]:
    kept = tuple(o for o in outcomes if o[0] > now - policy.window_s)
    return kept[-policy.max_outcomes :]


def error_rate(state: HealthState, now: float, policy: BreakerPolicy = DEFAULT_POLICY) -> float:
    window = _window(state.outcomes, now, policy)
    if not window:
        return 0.0
    return sum(1 for _, ok in window if not ok) / len(window)


def _open(state: HealthState, now: float, policy: BreakerPolicy, retry_after: float | None) -> HealthState:
    trips = state.trips + 1
    return replace(
        state,
        breaker="open",
        open_until=now + cooldown(trips, policy, retry_after),
        trips=trips,
        probes_in_flight=0,
        probe_successes=0,
        recovered_at=None,
    )


def record_success(
    state: HealthState, now: float, latency_ms: float | None, policy: BreakerPolicy = DEFAULT_POLICY
) -> HealthState:
    """A call succeeded in `latency_ms`: update latency stats; a half_open breaker may close.
    `latency_ms` None (an active probe's tiny call, unlike a job's) leaves the latency alone."""
    state = replace(
        state, consecutive_failures=0, outcomes=_window((*state.outcomes, (now, True)), now, policy)
    )
    if latency_ms is not None:
        alpha = policy.ewma_alpha
        ewma = (
            latency_ms
            if state.latency_ewma_ms is None
            else alpha * latency_ms + (1 - alpha) * state.latency_ewma_ms
        )
        state = replace(
            state,
            latency_ewma_ms=ewma,
            latencies=(*state.latencies, float(latency_ms))[-policy.latency_window :],
            samples=state.samples + 1,
        )
    if state.breaker != "half_open":
        return state
    successes = state.probe_successes + 1
    if successes >= policy.probe_successes:
        return replace(
            state,
            breaker="closed",
            open_until=None,
            trips=0,
            probes_in_flight=0,
            probe_successes=0,
            last_probe_at=None,
            outcomes=(),
            recovered_at=now,
        )
    return replace(state, probe_successes=successes, probes_in_flight=max(state.probes_in_flight - 1, 0))


def record_failure(
    state: HealthState, now: float, policy: BreakerPolicy = DEFAULT_POLICY, retry_after: float | None = None
) -> HealthState:
    """A call failed: a failed probe reopens the breaker; enough failures open a closed one."""
    state = replace(
        state,
        consecutive_failures=state.consecutive_failures + 1,
        outcomes=_window((*state.outcomes, (now, False)), now, policy),
    )
    if state.breaker == "half_open":
        return _open(state, now, policy, retry_after)
    if state.breaker == "open":
        return state  # a call admitted before it opened; the cooldown stands
    if state.consecutive_failures >= policy.failure_threshold:
        return _open(state, now, policy, retry_after)
    if (
        len(state.outcomes) >= policy.min_samples
        and error_rate(state, now, policy) > policy.error_rate_threshold
    ):
        return _open(state, now, policy, retry_after)
    return state


def admit(state: HealthState, now: float, policy: BreakerPolicy = DEFAULT_POLICY) -> tuple[bool, HealthState]:
    """May a call go to this deployment now? Moves open -> half_open once the cooldown passed."""
    if state.breaker == "closed":
        return True, state
    if state.breaker == "open":
        if state.open_until is not None and now < state.open_until:
            return False, state
        state = replace(state, breaker="half_open", probes_in_flight=0, probe_successes=0)
    in_flight = state.probes_in_flight
    if state.last_probe_at is not None and now - state.last_probe_at > policy.probe_timeout_s:
        in_flight = 0  # probes that never reported back do not block forever
    if in_flight >= policy.probe_limit:
        return False, state
    return True, replace(state, probes_in_flight=in_flight + 1, last_probe_at=now)


def _percentile(values: tuple[float, ...], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(max(math.ceil(q * len(ordered)), 1), len(ordered))  # nearest rank
    return ordered[rank - 1]


def snapshot(
    state: HealthState, now: float | None = None, policy: BreakerPolicy = DEFAULT_POLICY
) -> DeploymentHealth:
    """The routing view of a state; with `now`, the error rate covers only the current window."""
    outcomes = state.outcomes if now is None else _window(state.outcomes, now, policy)
    failures = sum(1 for _, ok in outcomes if not ok)
    return DeploymentHealth(
        breaker=state.breaker,
        open_until=state.open_until,
        latency_ewma_ms=state.latency_ewma_ms,
        latency_p50_ms=_percentile(state.latencies, 0.50),
        latency_p95_ms=_percentile(state.latencies, 0.95),
        error_rate=failures / len(outcomes) if outcomes else 0.0,
        consecutive_failures=state.consecutive_failures,
        samples=state.samples,
        traffic_share=traffic_share(state, now, policy),
    )


def traffic_share(state: HealthState, now: float | None, policy: BreakerPolicy = DEFAULT_POLICY) -> float:
    """The share of jobs a recovered deployment takes at its rank while ramping back."""
    if now is None or state.breaker != "closed" or state.recovered_at is None:
        return 1.0
    progress = (now - state.recovered_at) / policy.ramp_s if policy.ramp_s > 0 else 1.0
    return min(1.0, max(policy.ramp_floor, policy.ramp_floor + (1 - policy.ramp_floor) * progress))


def breaker_blocks(health: DeploymentHealth | None, now: float) -> bool:
    """Open and still cooling down. Half-open stays eligible: the store admits a few probes."""
    return (
        health is not None
        and health.breaker == "open"
        and health.open_until is not None
        and now < health.open_until
    )
