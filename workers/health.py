"""Deployment health for this process: breaker state and latency per deployment, shared by
every process through Redis when REDIS_URL is set, else kept in memory (the embedded
default, where one machine runs everything); and the shared round-robin position.

The transitions themselves are pure (`routing/breaker.py`); this module stores their
results. In Redis there is one JSON `HealthState` per deployment at
`{prefix}health:{deployment}`, and each update is an optimistic transaction (WATCH the key,
read, apply the transition, MULTI/SET/EXEC, again when another process wrote in between), so
concurrent updates from many processes are never lost. Round robin is an INCR at
`{prefix}rr:{key}`. Time is always passed in.

The dispatcher reads snapshots and the round-robin position; provider calls record their
outcomes and ask the breaker for admission. Only failures that are the deployment's fault
count against it: a request the provider rejected as invalid says nothing about its health.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import cache
from typing import Any, Protocol, TypeVar

import redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from core.redis import shared_redis
from core.settings import get_settings
from routing import breaker as h
from routing.breaker import BreakerPolicy, DeploymentHealth, HealthState
from workers.providers.errors import ContentFiltered, InvalidRequest, ProviderError

T = TypeVar("T")
log = logging.getLogger(__name__)

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


# Errors that are the request's fault, not the deployment's.
NOT_THE_DEPLOYMENTS_FAULT = (InvalidRequest, ContentFiltered)


class Store(Protocol):
    def record_successes(
        self, deployment: str, latencies_ms: list[float], now: float
    ) -> DeploymentHealth: ...
    def record_probe_success(self, deployment: str, now: float) -> DeploymentHealth: ...
    def record_failure(
        self, deployment: str, now: float, retry_after: float | None = None
    ) -> DeploymentHealth: ...
    def admit(self, deployment: str, now: float) -> bool: ...
    def preview(self, deployment: str, now: float) -> bool | None: ...
    def snapshot(self, names: Iterable[str], now: float) -> dict[str, DeploymentHealth]: ...
    def next_rotation(self, key: str) -> int: ...


class LocalHealthStore(BreakerTransitions):
    """The same transitions as `HealthStore`, in this process's memory."""

    def __init__(self, policy: h.BreakerPolicy = h.DEFAULT_POLICY) -> None:
        self.policy = policy
        self._states: dict[str, HealthState] = {}
        self._rotations: dict[str, int] = {}
        self._lock = threading.Lock()

    def _update(self, deployment: str, change: Callable[[HealthState], tuple[T, HealthState]]) -> T:
        with self._lock:
            result, self._states[deployment] = change(self._states.get(deployment, HealthState()))
            return result

    def state(self, deployment: str) -> HealthState:
        with self._lock:
            return self._states.get(deployment, HealthState())

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, DeploymentHealth]:
        with self._lock:
            return {n: h.snapshot(self._states.get(n, HealthState()), now, self.policy) for n in names}

    def next_rotation(self, key: str) -> int:
        with self._lock:
            self._rotations[key] = self._rotations.get(key, 0) + 1
            return self._rotations[key]


def breaker_policy() -> h.BreakerPolicy:
    """The default policy with this deployment's configured first cooldown and ramp."""
    settings = get_settings()
    return replace(
        h.DEFAULT_POLICY, cooldown_base_s=settings.breaker_cooldown_s, ramp_s=settings.breaker_ramp_s
    )


@cache
def store() -> Store:
    client = shared_redis()
    if client is None:
        return LocalHealthStore(breaker_policy())
    return HealthStore(client, prefix=get_settings().redis_prefix, policy=breaker_policy())


def admit(deployment: str, now: float) -> bool:
    return store().admit(deployment, now)


def preview_admission(deployment: str, now: float) -> bool | None:
    """What `admit` would answer without changing anything, or None if only it may decide."""
    return store().preview(deployment, now)


class SuccessBuffer:
    """Successes gathered per deployment and written together, at most every FLUSH_S or
    FLUSH_COUNT calls: one shared-store transaction per call was a large share of a provider
    worker's CPU (measured with py-spy in bench/pipeline.py). Failures are never buffered, and
    a deployment's pending successes are written before its failure, so the breaker sees
    outcomes in order; a success reaches the shared store at most FLUSH_S late."""

    FLUSH_S = 0.5
    FLUSH_COUNT = 100

    def __init__(self) -> None:
        self._pending: dict[str, list[float]] = {}
        self._last_flush: dict[str, float] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def _ensure_flusher(self) -> None:
        """A thread that writes what quiet deployments still hold, so no success waits long."""
        if self._flusher is not None:
            return
        with self._lock:
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_forever, name="llmqueue-health", daemon=True
                )
                self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            for deployment in list(self._pending):
                try:
                    self.flush(deployment, time.time())
                except Exception:  # Redis away: the next flush carries them
                    log.exception("could not write health for %s", deployment)

    def add(self, deployment: str, latency_ms: float, now: float) -> None:
        self._ensure_flusher()
        with self._lock:
            pending = self._pending.setdefault(deployment, [])
            pending.append(latency_ms)
            due = (
                len(pending) >= self.FLUSH_COUNT or now - self._last_flush.get(deployment, 0) >= self.FLUSH_S
            )
        if due:
            try:
                self.flush(deployment, now)
            except Exception:  # Redis away: kept for the next flush; the call's answer stands
                log.warning("could not write health for %s; kept for the next flush", deployment)

    def flush(self, deployment: str, now: float) -> None:
        with self._lock:
            latencies = self._pending.pop(deployment, [])
            self._last_flush[deployment] = now
        if latencies:
            try:
                store().record_successes(deployment, latencies, now)
            except Exception:
                with self._lock:  # keep them for the next flush, ahead of newer ones
                    self._pending[deployment] = latencies + self._pending.get(deployment, [])
                raise


_successes = SuccessBuffer()


def record_success(deployment: str, now: float, latency_ms: float) -> None:
    _successes.add(deployment, latency_ms, now)


def record_probe_success(deployment: str, now: float) -> None:
    _successes.flush(deployment, now)  # keep the order of outcomes, as for a failure
    store().record_probe_success(deployment, now)


def record_failure(deployment: str, now: float, error: ProviderError) -> DeploymentHealth | None:
    """Count a failure against the deployment; returns its health after it (None when the
    error was the request's fault and so not counted)."""
    if isinstance(error, NOT_THE_DEPLOYMENTS_FAULT):
        return None
    try:
        _successes.flush(deployment, now)
        return store().record_failure(deployment, now=now, retry_after=error.retry_after)
    except RedisError:  # the shared store is away: the failure still decides the attempt's fate
        log.warning("could not count a failure of %s: the health store is away", deployment)
        return None


def health_snapshot(names: Iterable[str], now: float) -> dict[str, DeploymentHealth]:
    return store().snapshot(names, now)


def next_rotation(key: str) -> int:
    return store().next_rotation(key)
