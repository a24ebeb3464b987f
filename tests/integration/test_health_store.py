"""The Redis-backed health store against a real Redis, updated from several processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier

import pytest
import redis

from routing.breaker import BreakerPolicy
from workers.health import HealthStore

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("LLMQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_700_000_000.0
CTX = mp.get_context("spawn")  # children open their own connections; no forked sockets


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(prefix: str) -> Iterator[HealthStore]:
    client = redis.Redis.from_url(REDIS_URL)
    yield HealthStore(client, prefix, BreakerPolicy())
    client.close()


def _fail_many(url: str, prefix: str, n: int, barrier: Barrier) -> None:
    store = HealthStore(redis.Redis.from_url(url), prefix, BreakerPolicy())
    barrier.wait(timeout=30)
    for i in range(n):
        store.record_failure("dep/a", T0 + i * 0.001)


def _rotate_many(url: str, prefix: str, n: int, barrier: Barrier, out: mp.Queue[list[int]]) -> None:
    store = HealthStore(redis.Redis.from_url(url), prefix, BreakerPolicy())
    barrier.wait(timeout=30)
    out.put([store.next_rotation("cost-pool") for _ in range(n)])


def _run(target: Callable[..., None], *args: object) -> None:
    procs = [CTX.Process(target=target, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0


def test_concurrent_failures_from_two_processes_all_count(store: HealthStore, prefix: str) -> None:
    _run(_fail_many, REDIS_URL, prefix, 100, CTX.Barrier(2))
    state = store.state("dep/a")
    assert state.consecutive_failures == 200
    assert len(state.outcomes) == 200
    assert state.breaker == "open" and state.trips == 1  # opened once; later failures left it open
    assert store.snapshot(["dep/a"], T0 + 1)["dep/a"].error_rate == 1.0


def test_breaker_opens_half_opens_and_closes(store: HealthStore) -> None:
    assert store.admit("dep/b", T0)
    for i in range(5):
        store.record_failure("dep/b", T0 + i)
    health = store.snapshot(["dep/b", "dep/never"], T0 + 5)
    assert health["dep/b"].breaker == "open" and health["dep/b"].open_until == T0 + 4 + 10
    assert health["dep/never"].breaker == "closed" and health["dep/never"].samples == 0
    assert not store.admit("dep/b", T0 + 13)

    assert [store.admit("dep/b", T0 + 14) for _ in range(4)] == [True, True, True, False]
    assert store.snapshot(["dep/b"], T0 + 14)["dep/b"].breaker == "half_open"
    for i in range(3):
        store.record_success("dep/b", 250.0, T0 + 15 + i)
    closed = store.snapshot(["dep/b"], T0 + 20)["dep/b"]
    assert closed.breaker == "closed" and closed.latency_ewma_ms == pytest.approx(250.0)
    assert closed.samples == 3


def test_retry_after_and_failed_probe(store: HealthStore) -> None:
    for _ in range(5):
        after = store.record_failure("dep/c", T0, retry_after=30)
    assert after.breaker == "open" and after.open_until == T0 + 30
    assert store.admit("dep/c", T0 + 30)
    reopened = store.record_failure("dep/c", T0 + 31)
    assert reopened.breaker == "open" and reopened.open_until == T0 + 31 + 20


def test_next_rotation_from_two_processes_is_distinct_and_increasing(store: HealthStore, prefix: str) -> None:
    out: mp.Queue[list[int]] = CTX.Queue()
    barrier = CTX.Barrier(2)
    procs = [CTX.Process(target=_rotate_many, args=(REDIS_URL, prefix, 150, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for values in results:
        assert values == sorted(values) and len(set(values)) == 150
    assert sorted(results[0] + results[1]) == list(range(1, 301))


def test_reset_forgets_everything_under_the_prefix(store: HealthStore, prefix: str) -> None:
    store.record_failure("dep/d", T0)
    store.next_rotation("x")
    other = HealthStore(store.redis, prefix + "other:", BreakerPolicy())
    other.record_failure("dep/d", T0)
    store.reset()
    assert store.state("dep/d").consecutive_failures == 0
    assert store.next_rotation("x") == 1
    assert other.state("dep/d").consecutive_failures == 1


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "in-process"])
def test_preview_answers_only_what_changes_nothing(store: HealthStore, shared: bool) -> None:
    from workers.health import LocalHealthStore

    target = store if shared else LocalHealthStore(BreakerPolicy())
    dep = "openai/gpt-4o-mini"
    assert target.preview(dep, T0) is True  # closed: admitted, nothing to record
    for i in range(5):
        target.record_failure(dep, T0 + i * 0.1)
    assert target.preview(dep, T0 + 1) is False  # cooling down: refused, nothing to record
    later = T0 + 60
    assert target.preview(dep, later) is None  # a probe would be counted: only admit decides
    assert target.preview(dep, later) is None  # ... and the preview did not count one
    assert target.admit(dep, later) is True
