"""Rate limits as providers enforce and report them, shared by every wire format.

`Limiter` owns, per scope, the rolling 60-second window of admitted calls (each with the tokens it
weighs) and the calls in flight. `Limiter.admit` refuses a call that would take the window past the
scope's `rpm` (calls) or `tpm` (tokens), or the scope past `max_concurrency` calls in flight, with a
429 whose retry-after is the wait until the call would fit; a refused call is not counted.
`Limiter.state` describes what is left of the window, and `openai_headers`, `anthropic_headers` and
`mistral_headers` render that in each provider family's own rate-limit headers.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

WINDOW_S = 60.0


class Limits(Protocol):
    """The part of a scope's configuration the limiter reads (`core.ScopeConfig`)."""

    rpm: int | None
    tpm: int | None
    max_concurrency: int | None


@dataclass(frozen=True)
class Refusal:
    """Why a call was not admitted, and how long until it would be (None: it never will)."""

    message: str
    retry_after: float | None


@dataclass(frozen=True)
class Budget:
    """One limit as a response reports it."""

    limit: int
    remaining: int
    reset_s: float  # seconds until the window is fully replenished (its newest call has aged out)


@dataclass(frozen=True)
class RateState:
    """What is left of a scope's window when a response is sent; None fields are limits not set."""

    requests: Budget | None
    tokens: Budget | None
    cost: int  # the tokens this request weighs


def _frees(window: deque[tuple[float, int]], excess: int) -> float:
    """When the oldest call whose ageing out frees `excess` tokens was admitted."""
    freed = 0
    for at, weight in window:
        freed += weight
        if freed >= excess:
            return at
    raise ValueError("the window holds fewer tokens than the excess")  # admit() rules this out


def _ceil_ms(seconds: float) -> float:
    # Rounded up, never down: a client that waits exactly retry-after must find room.
    return math.ceil(max(seconds, 0.001) * 1000) / 1000


class Limiter:
    """Per-scope windows of admitted calls and calls in flight. The emulator is one event loop, so
    nothing here needs a lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, deque[tuple[float, int]]] = {}  # (admitted at, tokens), oldest first
        self._in_flight: dict[str, dict[int, float]] = {}  # ticket -> when the call is expected to end
        self._tickets = itertools.count(1)

    def clear(self) -> None:
        self._windows.clear()
        self._in_flight.clear()

    def _window(self, key: str, now: float) -> deque[tuple[float, int]]:
        window = self._windows.setdefault(key, deque())
        while window and now - window[0][0] >= WINDOW_S:
            window.popleft()
        return window

    def admit(
        self, key: str, limits: Limits, tokens: int, expected_s: float = 0.0
    ) -> tuple[Refusal | None, int | None]:
        """Admit a call weighing `tokens` (and count it), or refuse it. An admitted call holds a
        ticket until `release`; `expected_s` is how long it is expected to take."""
        now = self._clock()
        window = self._window(key, now)
        flying = self._in_flight.setdefault(key, {})
        if limits.max_concurrency is not None and len(flying) >= limits.max_concurrency:
            # Nobody knows when a call in flight ends; the soonest expected end is the best guess.
            wait = min(flying.values()) - now
            return Refusal(
                f"emulated concurrency limit of {limits.max_concurrency} requests in flight", _ceil_ms(wait)
            ), None
        reasons: list[str] = []
        waits: list[float] = []
        if limits.rpm is not None and len(window) >= limits.rpm:
            # The window must lose enough of its oldest calls to leave room for one more.
            oldest_to_go = window[len(window) - limits.rpm]
            reasons.append(f"{limits.rpm} requests per minute")
            waits.append(oldest_to_go[0] + WINDOW_S - now)
        if limits.tpm is not None:
            if tokens > limits.tpm:
                message = (
                    f"Request too large: it weighs {tokens} tokens and the limit is {limits.tpm} tokens "
                    "per minute; it can never fit"
                )
                return Refusal(message, None), None
            excess = sum(t for _, t in window) + tokens - limits.tpm
            if excess > 0:
                reasons.append(f"{limits.tpm} tokens per minute")
                waits.append(_frees(window, excess) + WINDOW_S - now)
        if reasons:
            return Refusal("emulated rate limit of " + " and ".join(reasons), _ceil_ms(max(waits))), None
        window.append((now, tokens))
        ticket = next(self._tickets)
        flying[ticket] = now + expected_s
        return None, ticket

    def release(self, key: str, ticket: int) -> None:
        """The call holding `ticket` has ended (its response is sent)."""
        self._in_flight.get(key, {}).pop(ticket, None)

    def state(self, key: str, limits: Limits, cost: int) -> RateState:
        now = self._clock()
        window = self._window(key, now)
        requests = tokens = None
        if limits.rpm is not None:
            reset = window[-1][0] + WINDOW_S - now if window else 0.0
            requests = Budget(limits.rpm, max(0, limits.rpm - len(window)), reset)
        if limits.tpm is not None:
            weighed = [at for at, weight in window if weight > 0]
            reset = weighed[-1] + WINDOW_S - now if weighed else 0.0
            used = sum(weight for _, weight in window)
            tokens = Budget(limits.tpm, max(0, limits.tpm - used), reset)
        return RateState(requests, tokens, cost)


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's `time.Duration` format): `20ms`, `1s`, `1.5s`, `6m0s`."""
    millis = math.ceil(seconds * 1000) if seconds > 0 else 0
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def openai_headers(state: RateState) -> dict[str, str]:
    """OpenAI's (and Azure's, and the compatible servers') `x-ratelimit-*` headers."""
    headers: dict[str, str] = {}
    for name, budget in (("requests", state.requests), ("tokens", state.tokens)):
        if budget is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(budget.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{name}"] = go_duration(budget.reset_s)
    return headers


def rfc3339_after(seconds: float) -> str:
    """The wall-clock time `seconds` from now, rounded up to the second, as Anthropic writes it."""
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic_headers(state: RateState) -> dict[str, str]:
    """Anthropic's `anthropic-ratelimit-*` headers. The emulator has one token budget, so the input
    and output token families report it too: every token, in or out, spends it."""
    headers: dict[str, str] = {}
    families = [("requests", state.requests)]
    families += [(name, state.tokens) for name in ("tokens", "input-tokens", "output-tokens")]
    for name, budget in families:
        if budget is not None:
            headers[f"anthropic-ratelimit-{name}-limit"] = str(budget.limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(budget.remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339_after(budget.reset_s)
    return headers


def mistral_headers(state: RateState) -> dict[str, str]:
    """Mistral's token limit headers (`x-ratelimitbysize-*-minute` and the unprefixed
    `ratelimitbysize-*`, reset in whole seconds). Mistral reports no request-count headers."""
    if state.tokens is None:
        return {}
    budget = state.tokens
    return {
        "x-ratelimitbysize-limit-minute": str(budget.limit),
        "x-ratelimitbysize-remaining-minute": str(budget.remaining),
        "ratelimitbysize-limit": str(budget.limit),
        "ratelimitbysize-remaining": str(budget.remaining),
        "ratelimitbysize-reset": str(math.ceil(budget.reset_s)),
        "ratelimitbysize-query-cost": str(state.cost),
    }
