"""Attempts already queued for a deployment whose breaker then opens: the provider worker
asks the breaker once for the message's attempts, and each fails over without a call to the
job's next candidate."""

from __future__ import annotations

import os
import time

import redis
from sqlalchemy import select

from jobstore.db import transaction
from jobstore.models import Attempt
from tests.integration.conftest import Stack, WorkerProcess
from tests.integration.test_priorities import AZURE, body, pending_on_azure, wait_until
from workers.health import HealthStore

FALLBACK = "mistral/mistral-small"


def test_queued_attempts_fail_over_without_a_call_when_the_breaker_has_opened(stack: Stack) -> None:
    ids = [
        stack.submit(body(f"queued {i}", model=AZURE, fallbacks=[FALLBACK])).json()["id"] for i in range(3)
    ]
    wait_until(lambda: all(pending_on_azure(j) for j in ids), "the attempts queued for azure")

    health = HealthStore(
        redis.Redis.from_url(os.environ["REDIS_URL"]), prefix=os.environ["LLMQUEUE_REDIS_PREFIX"]
    )
    for _ in range(5):  # failure_threshold: the breaker opens for its 10 s cooldown
        health.record_failure(AZURE, time.time())
    azure = WorkerProcess(queues="provider.azure", concurrency=2).start()
    try:
        jobs = [stack.wait(j) for j in ids]
    finally:
        azure.stop()

    for job in jobs:
        assert job["status"] == "succeeded", job
        assert [a["deployment"] for a in job["attempts"]] == [AZURE, FALLBACK]
        refused = job["attempts"][0]
        assert refused["error"] == {"type": "failover:transient", "message": "circuit breaker open"}, refused
    with transaction() as session:
        latencies = session.scalars(
            select(Attempt.latency_ms).where(Attempt.job_id.in_(ids), Attempt.deployment == AZURE)
        ).all()
    assert latencies == [None, None, None]  # refused before any call was made
    assert stack.emulator.calls(provider="azure") == []
