"""The shared, Redis-backed health of every deployment, and the round-robin counter.

Every worker process reads and updates the same state: one JSON `HealthState` per deployment
at `{prefix}health:{deployment}`. Each update is an optimistic transaction (WATCH the key,
read, apply the pure transition from `routing/health.py`, MULTI/SET/EXEC, retry when another
process wrote in between), so concurrent updates from many processes are never lost.
Round-robin rotation is a Redis INCR at `{prefix}rr:{key}`. Time is always passed in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from routing import health as h
from routing.health import BreakerPolicy, DeploymentHealth, HealthState

T = TypeVar("T")
DECODED_KEEP = 256  # decoded states kept per store (up to ~20 kB each), a few per deployment


class BreakerTransitions:
    """The outcome and admission methods, written once over two primitives a store supplies:
    `state(deployment)` (a read) and `_update(deployment, change)` (an atomic apply of a
    pure transition from `routing/health.py`). `HealthStore` keeps the states in Redis,
    `workers.health.LocalHealthStore` in one process's memory."""

    policy: BreakerPolicy

    def state(self, deployment: str) -> HealthState:
        raise NotImplementedError

    def _update(self, deployment: str, change: Callable[[HealthState], tuple[T, HealthState]]) -> T:
        raise NotImplementedError

    def record_success(self, deployment: str, latency_ms: float, now: float) -> DeploymentHealth:
        """A call succeeded; returns the deployment's health after it."""
        return self.record_successes(deployment, [latency_ms], now)

    def record_successes(
        self, deployment: str, latencies_ms: Sequence[float | None], now: float
    ) -> DeploymentHealth:
        """Several calls succeeded (in this order); one transaction for all of them. A latency
        of None (an active probe's) counts for the breaker, not for the latency stats."""

        def change(state: HealthState) -> tuple[DeploymentHealth, HealthState]:
            new = state
            for latency_ms in latencies_ms:
                new = h.record_success(new, now, latency_ms, self.policy)
            return h.snapshot(new, now, self.policy), new

        return self._update(deployment, change)

    def record_probe_success(self, deployment: str, now: float) -> DeploymentHealth:
        """An active probe succeeded: it counts for the breaker, not for the latency stats."""
        return self.record_successes(deployment, [None], now)

    def record_failure(
        self, deployment: str, now: float, retry_after: float | None = None
    ) -> DeploymentHealth:
        """A call failed in a way that is the deployment's fault; returns its health after it."""

        def change(state: HealthState) -> tuple[DeploymentHealth, HealthState]:
            new = h.record_failure(state, now, self.policy, retry_after)
            return h.snapshot(new, now, self.policy), new

        return self._update(deployment, change)

    def preview(self, deployment: str, now: float) -> bool | None:
        """`admit`'s answer when giving it changes nothing: yes for a closed breaker, no for
        one cooling down (one GET, as if asked just before any concurrent write); None when
        admitting would count a half-open probe, which only `admit` may do."""
        current = self.state(deployment)
        allowed, new = h.admit(current, now, self.policy)
        return allowed if new == current else None

    def admit(self, deployment: str, now: float) -> bool:
        """May a call go to `deployment` now? Counts the call as a probe when half-open."""
        answer = self.preview(deployment, now)
        if answer is not None:
            return answer
        return self._update(deployment, lambda state: h.admit(state, now, self.policy))


class HealthStore(BreakerTransitions):
    """Breaker state and latency stats per deployment, shared through Redis under `prefix`."""

    def __init__(
        self,
        redis: redis.Redis,
        prefix: str = "llmqueue:",
        policy: BreakerPolicy = h.DEFAULT_POLICY,
        ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.policy = policy
        self.ttl_s = ttl_s  # a deployment nobody called for this long starts afresh
        # One writer per deployment per process: hundreds of worker threads updating one key
        # would otherwise mostly fail their WATCH and retry (Redis round trips and JSON work
        # thrown away); other processes still race through WATCH as before.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._decoded: dict[Any, HealthState] = {}

    def key(self, deployment: str) -> str:
        return f"{self.prefix}health:{deployment}"

    def _decode(self, raw: Any) -> HealthState:
        """The state a stored value holds. A deployment's value changes at most every half
        second or so (successes are written in batches) while every call and every routing
        decision reads it, so the decoded state of a value seen before is reused (the
        states are immutable): JSON decoding was most of an admission's CPU."""
        if raw is None:
            return HealthState()
        known = self._decoded.get(raw)
        if known is not None:
            return known
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        data: dict[str, Any] = json.loads(text)
        state = HealthState.from_dict(data)
        if len(self._decoded) >= DECODED_KEEP:
            self._decoded.clear()  # old values are never asked for again; start afresh
        self._decoded[raw] = state
        return state

    def _lock(self, deployment: str) -> threading.Lock:
        lock = self._locks.get(deployment)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(deployment, threading.Lock())
        return lock

    def _update(self, deployment: str, change: Callable[[HealthState], tuple[T, HealthState]]) -> T:
        """Apply `change` to the stored state atomically; writes only when the state changed."""
        key = self.key(deployment)
        pipe: Pipeline
        with self._lock(deployment), self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    state = self._decode(pipe.get(key))
                    result, new = change(state)
                    pipe.multi()
                    if new != state:
                        pipe.set(key, json.dumps(new.to_dict()), ex=self.ttl_s)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def state(self, deployment: str) -> HealthState:
        return self._decode(self.redis.get(self.key(deployment)))

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, DeploymentHealth]:
        """The health of each named deployment (a deployment never seen is healthy)."""
        names = list(names)
        if not names:
            return {}
        raws: list[Any] = self.redis.mget([self.key(n) for n in names])
        return {
            n: h.snapshot(self._decode(raw), now, self.policy) for n, raw in zip(names, raws, strict=True)
        }

    def next_rotation(self, key: str) -> int:
        """The next value of a counter shared by every process (round robin's position)."""
        return int(self.redis.incr(f"{self.prefix}rr:{key}"))

    def reset(self) -> None:
        """Forget every deployment's health and every rotation counter under this prefix."""
        for pattern in (f"{self.prefix}health:*", f"{self.prefix}rr:*"):
            batch: list[Any] = []
            for key in self.redis.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    self.redis.delete(*batch)
                    batch.clear()
            if batch:
                self.redis.delete(*batch)
