"""Deployment health for this process: shared through Redis when REDIS_URL is set, else
kept in memory (the embedded default, where one machine runs everything).

The dispatcher reads snapshots and the round-robin counter; provider calls record their
outcomes and ask the breaker for admission. Only failures that are the deployment's fault
count against it: a request the provider rejected as invalid says nothing about its health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache
from typing import Protocol, TypeVar

from core.settings import get_settings
from routing import health as h
from routing.health import DeploymentHealth, HealthState
from workers.health_store import BreakerTransitions, HealthStore
from workers.providers.errors import ContentFiltered, InvalidRequest, ProviderError
from workers.streams import shared_redis

T = TypeVar("T")
log = logging.getLogger(__name__)

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
            self.flush(deployment, now)

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
    _successes.flush(deployment, now)
    return store().record_failure(deployment, now=now, retry_after=error.retry_after)


def health_snapshot(names: Iterable[str], now: float) -> dict[str, DeploymentHealth]:
    return store().snapshot(names, now)


def next_rotation(key: str) -> int:
    return store().next_rotation(key)
