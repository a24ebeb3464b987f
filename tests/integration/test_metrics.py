"""Prometheus metrics on the real stack: `/metrics` scraped after a document batch equals the
database (jobs by status, tokens and spend per model and provider), and the worker's own
metrics count the batch's provider calls."""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from jobstore.db import transaction
from jobstore.models import Attempt, AttemptStatus, Job, JobStatus
from routing.catalog import get_catalog
from tests.integration.conftest import Stack, WorkerProcess, wait_until_quiet
from workers.queues import ALL_QUEUES

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def calls_counted(samples: Samples) -> float:
    histogram = named(samples, "llmqueue_provider_call_duration_seconds_count")
    return sum(v for labels, v in histogram.items() if ("outcome", "success") in labels)


def run_batch(stack: Stack, documents: int) -> dict[str, Any]:
    files = [
        ("files", (f"doc-{n}.txt", f"Document {n} says hello {n} times.".encode())) for n in range(documents)
    ]
    created = stack.client.post(
        "/v1/document_batches", data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini"}, files=files
    )
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    for _ in range(600):
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] == "completed":
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not complete: {batch}")


def test_metrics_after_a_batch_equal_the_database(stack: Stack, worker: WorkerProcess) -> None:
    before = scrape(worker.metrics_url)
    batch = run_batch(stack, 8)
    wait_until_quiet()
    samples = scrape(f"{stack.api_url}/metrics")

    with transaction() as session:
        by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        usage = session.execute(
            select(
                Job.provider,
                Job.model,
                func.sum(Job.input_tokens),
                func.sum(Job.output_tokens),
                func.sum(Job.cost_usd),
            )
            .where(Job.model.is_not(None))
            .group_by(Job.provider, Job.model)
        ).all()
        batch_calls = session.scalar(
            select(func.count())
            .select_from(Attempt)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.batch_id == batch["id"], Attempt.status == AttemptStatus.SUCCEEDED)
        )

    jobs = named(samples, "llmqueue_jobs")
    assert jobs == {(("status", s.value),): float(by_status.get(s.value, 0)) for s in JobStatus}
    assert jobs[(("status", "succeeded"),)] >= 8

    spend = named(samples, "llmqueue_spend_usd_total")
    tokens = named(samples, "llmqueue_tokens_total")
    assert len(spend) == len(usage) > 0
    total = Decimal(0)
    for provider, model, n_in, n_out, cost in usage:
        where = (("model", model), ("provider", provider))
        assert spend[where] == float(cost)
        assert tokens[(("kind", "input"), *where)] == n_in
        assert tokens[(("kind", "output"), *where)] == n_out
        total += cost
    assert total >= Decimal(batch["cost_usd"]) > 0

    depth = named(samples, "llmqueue_queue_depth")
    assert depth == {(("queue", q),): 0.0 for q in ALL_QUEUES}  # quiet: nothing waits
    breaker = named(samples, "llmqueue_breaker_state")
    for name in get_catalog().deployments:
        states = {dict(labels)["state"]: v for labels, v in breaker.items() if ("deployment", name) in labels}
        assert sorted(states.values()) == [0.0, 0.0, 1.0], (name, states)

    after = scrape(worker.metrics_url)
    assert calls_counted(after) - calls_counted(before) == batch_calls == 8
    per_deployment: dict[str, float] = defaultdict(float)
    for labels, value in named(after, "llmqueue_provider_call_duration_seconds_count").items():
        per_deployment[dict(labels)["deployment"]] += value
    assert all(name in get_catalog().deployments for name in per_deployment)


def test_a_worker_failing_over_counts_it(stack: Stack, worker: WorkerProcess) -> None:
    before = scrape(worker.metrics_url)
    stack.emulator.configure({"gpt-4o-mini": {"outage": True}})
    submitted = stack.submit(
        {
            "messages": [{"role": "user", "content": "hello"}],
            "model": "gpt-4o-mini",
            "fallbacks": ["gpt-4.1-mini"],
        }
    )
    job = stack.wait(submitted.json()["id"])
    assert job["status"] == "succeeded" and job["model"] == "gpt-4.1-mini"
    after = scrape(worker.metrics_url)

    def value(samples: Samples, name: str, deployment: str) -> float:
        return sum(v for labels, v in named(samples, name).items() if ("deployment", deployment) in labels)

    failed_calls = [a for a in job["attempts"] if a["deployment"] == "openai/gpt-4o-mini"]
    left = "llmqueue_failovers_total"
    assert value(after, left, "openai/gpt-4o-mini") - value(before, left, "openai/gpt-4o-mini") == 1
    retried = "llmqueue_retries_total"
    assert (
        value(after, retried, "openai/gpt-4o-mini") - value(before, retried, "openai/gpt-4o-mini")
        == len(failed_calls) - 1
    )
    errors = {
        dict(labels)["outcome"]
        for labels, _ in named(after, "llmqueue_provider_call_duration_seconds_count").items()
        if ("deployment", "openai/gpt-4o-mini") in labels
    }
    assert errors - {"success"}, errors  # the outage's calls, by error kind
