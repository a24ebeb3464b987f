"""The optional active probe on the real stack: off by default; when on, every deployment
gets a tiny call through its provider's queue and worker, its outcome recorded into shared
health for the breaker, and deployments whose breaker is cooling down are left alone."""

from __future__ import annotations

import os
import time

import redis

from routing.breaker import DeploymentHealth
from tests.integration.conftest import Stack, WorkerProcess
from workers.health import HealthStore
from workers.probes import deployments_to_probe, send_probe_round

MISTRAL = "mistral/mistral-small"
OPENAI = "openai/gpt-4o-mini"
SONNET = "anthropic/claude-sonnet-4-6"
MISTRAL_EMBED = "mistral/mistral-embed"


def health_store() -> HealthStore:
    return HealthStore(
        redis.Redis.from_url(os.environ["REDIS_URL"]), prefix=os.environ["LLMQUEUE_REDIS_PREFIX"]
    )


def probed_ok(store: HealthStore, deployment: str) -> bool:
    return any(ok for _, ok in store.state(deployment).outcomes)


def wait_for(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_cooling_deployments_are_not_probed() -> None:
    now = 1_700_000_000.0
    snapshot = {
        "a": DeploymentHealth(breaker="open", open_until=now + 5),
        "b": DeploymentHealth(breaker="open", open_until=now - 1),  # cooldown over: probe it
        "c": DeploymentHealth(breaker="half_open"),
    }
    assert deployments_to_probe(["a", "b", "c", "d"], snapshot, now) == ["b", "c", "d"]


def test_a_probe_round_records_health_learned_from_tiny_calls(stack: Stack) -> None:
    stack.emulator.configure({"openai": {"outage": True}, "mistral": {"latency_ms": 30}})
    store = health_store()
    time.sleep(1.0)  # successes of earlier tests reach the store up to 0.5 s late: let them land
    store.reset()
    for _ in range(5):
        store.record_failure("anthropic/claude-haiku-4-5", time.time())  # cooling down now
    # A probe expires after its round's interval: long enough here for a busy worker to reach it.
    sent = send_probe_round(interval_s=30)
    assert sent > 0

    def missing() -> list[str]:
        wanted = {
            MISTRAL: probed_ok(store, MISTRAL),
            SONNET: probed_ok(store, SONNET),
            MISTRAL_EMBED: probed_ok(store, MISTRAL_EMBED),
            OPENAI: store.state(OPENAI).consecutive_failures >= 1,
        }
        return [name for name, seen in wanted.items() if not seen]

    deadline = time.monotonic() + 30
    while missing():
        assert time.monotonic() < deadline, f"no probe outcome for {missing()}"
        time.sleep(0.2)
    # an embedding deployment is probed with one embedding, not a chat call its model cannot take
    assert [c["kind"] for c in stack.emulator.calls(model="mistral-embed")] == ["embed"]
    # A one-token answer's latency is not a job's: the probe leaves the latency stats alone.
    assert store.state(MISTRAL).latency_ewma_ms is None and store.state(MISTRAL).samples == 0
    assert stack.emulator.calls(provider="anthropic", model="claude-sonnet-4-6")
    assert not stack.emulator.calls(model="claude-haiku-4-5")  # cooling down: not probed
    assert stack.client.get("/v1/jobs").json()["data"] == []  # probes are not jobs


def test_probes_run_by_themselves_when_turned_on(stack: Stack) -> None:
    stack.emulator.configure({})
    health_store().reset()
    dispatcher = WorkerProcess(queues="dispatch", concurrency=2, env={"LLMQUEUE_ACTIVE_PROBE_S": "1"})
    dispatcher.start()
    try:
        wait_for(lambda: len(stack.emulator.calls(provider="mistral")) >= 2)  # two rounds at least
    finally:
        dispatcher.stop()
    assert probed_ok(health_store(), MISTRAL)
