"""Retries, provider errors, a worker killed mid-call, and idempotent submission,
on the real stack."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import redis

from tests.integration.conftest import Stack, WorkerProcess


def body(text: str, model: str = "gpt-4o-mini") -> dict:  # type: ignore[type-arg]
    return {"messages": [{"role": "user", "content": text}], "model": model}


def test_429_with_retry_after_is_retried_after_that_delay(stack: Stack) -> None:
    stack.emulator.configure({"gpt-4o-mini": {"script": [{"status": 429, "retry_after": 2}]}})
    job = stack.wait(stack.submit(body("rate limited once")).json()["id"])
    assert job["status"] == "succeeded", job
    calls = stack.emulator.calls(model="gpt-4o-mini")
    assert [c["status"] for c in calls] == [429, 200]
    assert calls[1]["t"] - calls[0]["t"] >= 2.0
    first, second = job["attempts"]
    assert first["status"] == "failed" and first["error"]["type"] == "rate_limited"
    assert first["retry_after_s"] == 2
    assert second["status"] == "succeeded" and second["deployment"] == first["deployment"]


def test_transient_errors_are_retried_with_backoff(stack: Stack) -> None:
    stack.emulator.configure({"gpt-4o-mini": {"script": [{"status": 500}, {"status": 503}]}})
    job = stack.wait(stack.submit(body("flaky")).json()["id"])
    assert job["status"] == "succeeded"
    assert [a["status"] for a in job["attempts"]] == ["failed", "failed", "succeeded"]


def test_a_failure_that_opens_the_breaker_fails_over_at_once(stack: Stack) -> None:
    """Retrying on a deployment whose breaker just opened would wait out a backoff only to
    be refused; the job moves to its fallback straight away instead."""
    from workers.health import HealthStore

    health = HealthStore(
        redis.Redis.from_url(os.environ["REDIS_URL"]), prefix=os.environ["LLMQUEUE_REDIS_PREFIX"]
    )
    time.sleep(1.0)  # successes of earlier tests reach the store up to 0.5 s late: let them land
    health.reset()
    for _ in range(4):  # one more failure opens it (failure_threshold 5)
        health.record_failure("openai/gpt-4o-mini", time.time())
    stack.emulator.configure({"openai": {"script": [{"status": 500}]}})
    fallback = "mistral/mistral-small"
    job = stack.wait(
        stack.submit(body("the fifth failure", "openai/gpt-4o-mini") | {"fallbacks": [fallback]}).json()["id"]
    )
    assert job["status"] == "succeeded", job
    first, second = job["attempts"]
    assert first["deployment"] == "openai/gpt-4o-mini"
    assert first["error"]["type"] == "failover:transient", first
    assert second["deployment"] == fallback and second["status"] == "succeeded"
    assert len(stack.emulator.calls(provider="openai")) == 1


def test_provider_400_fails_the_job_with_the_providers_message(stack: Stack) -> None:
    stack.emulator.configure(
        {
            "gpt-4o-mini": {
                "script": [{"status": 400, "message": "Invalid value for 'temperature': must be <= 2."}]
            }
        }
    )
    job = stack.wait(stack.submit(body("bad request")).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_request"
    assert "Invalid value for 'temperature'" in job["error"]["message"]
    assert len(job["attempts"]) == 1
    assert job["cost_usd"] == "0E-8" or float(job["cost_usd"]) == 0


def test_same_idempotency_key_twice_gives_one_job(stack: Stack) -> None:
    first = stack.submit(body("once only"), **{"Idempotency-Key": "abc-123"})
    second = stack.submit(body("once only"), **{"Idempotency-Key": "abc-123"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert first.json() == second.json()  # the same answer, replayed
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    stack.wait(first.json()["id"])
    assert len(stack.emulator.calls(model="gpt-4o-mini")) == 1
    clash = stack.submit(body("something else"), **{"Idempotency-Key": "abc-123"})
    assert clash.status_code == 409
    assert clash.json()["error"]["param"] == "Idempotency-Key"


def test_a_key_sees_only_its_own_jobs(stack: Stack) -> None:
    from tests.integration.conftest import make_key

    job_id = stack.submit(body("mine")).json()["id"]
    other = Stack(stack.api_url, make_key("other"), stack.emulator)
    r = other.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"


def test_worker_killed_mid_call_then_replaced_succeeds_once(stack: Stack, worker: WorkerProcess) -> None:
    """SIGKILL a provider worker while its call is in flight; a new worker takes the message
    over after the visibility timeout and the job ends with exactly one result and one cost."""
    env = {"LLMQUEUE_VISIBILITY_TIMEOUT_S": "6", "LLMQUEUE_PROVIDER_TIMEOUT_S": "3"}
    victim = WorkerProcess(queues="provider.azure", concurrency=4, env=env).start()
    try:
        stack.emulator.configure({"azure": {"latency_ms": 2500}})
        job_id = stack.submit(body("survive a crash", model="azure/gpt-4o-mini")).json()["id"]
        deadline = time.monotonic() + 20
        while not stack.emulator.calls(provider="azure"):
            assert time.monotonic() < deadline, "the call never reached the provider"
            time.sleep(0.05)
        victim.kill()
        assert stack.job(job_id)["status"] == "running"
    finally:
        victim.stop()
    replacement = WorkerProcess(queues="provider.azure", concurrency=4, env=env).start()
    try:
        job = stack.wait(job_id, timeout=60)
    finally:
        replacement.stop()
    assert job["status"] == "succeeded", job
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT status, cost_usd FROM attempts WHERE job_id = %s ORDER BY number", (job_id,)
        ).fetchall()
        succeeded = [r for r in rows if r[0] == "succeeded"]
        assert len(succeeded) == 1
        (job_cost,) = conn.execute("SELECT cost_usd FROM jobs WHERE id = %s", (job_id,)).fetchone()
        assert job_cost == succeeded[0][1] and job_cost > 0
    assert len(stack.emulator.calls(provider="azure")) == 2  # the killed call and the retry


def test_a_provider_worker_keeps_its_calls_in_flight_to_its_concurrency(stack: Stack) -> None:
    """Messages reach a provider worker on several task threads at once; together they start at
    most `-c` calls (each books its room before it claims)."""
    small = WorkerProcess(queues="provider.azure", concurrency=4).start()
    try:
        stack.emulator.configure({"azure": {"latency_ms": 600}})
        with ThreadPoolExecutor(max_workers=12) as pool:  # submitted together, as a burst
            texts = [f"room {i}" for i in range(36)]
            answers = list(pool.map(lambda t: stack.submit(body(t, model="azure/gpt-4o-mini")), texts))
        for answer in answers:
            assert stack.wait(answer.json()["id"])["status"] == "succeeded"
    finally:
        small.stop()
    starts = sorted(call["t"] for call in stack.emulator.calls(provider="azure"))
    assert len(starts) == 36
    # A call holds its room 600 ms, so no half second can see more than four calls start.
    most = max(sum(1 for s in starts if t <= s < t + 0.5) for t in starts)
    assert most <= 4, f"{most} calls started within half a second on a worker of -c 4"
