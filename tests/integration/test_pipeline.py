"""One job through the whole real pipeline: HTTP API, Postgres, Redis broker, a Celery
worker process, the openai SDK and the emulator over HTTP."""

from __future__ import annotations

from decimal import Decimal

from tests.integration.conftest import Stack

HELLO = {"messages": [{"role": "user", "content": "Summarise: the quick brown fox."}], "model": "gpt-4o-mini"}


def test_job_succeeds_with_result_usage_and_cost(stack: Stack) -> None:
    r = stack.submit(HELLO)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["url"].endswith(f"/v1/jobs/{accepted['id']}")
    job = stack.wait(accepted["id"])
    assert job["status"] == "succeeded", job
    assert "the quick brown fox" in job["result"]
    assert job["provider"] == "openai" and job["model"] == "gpt-4o-mini"
    assert job["usage"]["input_tokens"] > 0 and job["usage"]["output_tokens"] > 0
    expected = (
        Decimal(job["usage"]["input_tokens"]) * Decimal("0.15")
        + Decimal(job["usage"]["output_tokens"]) * Decimal("0.60")
    ) / Decimal(1_000_000)
    assert Decimal(job["cost_usd"]) == expected.quantize(Decimal("0.00000001"))
    assert len(job["attempts"]) == 1 and job["attempts"][0]["status"] == "succeeded"


def test_call_latency_and_total_latency_are_reported_apart(stack: Stack) -> None:
    # The first call fails fast, a backoff passes, the second call takes 300 ms and answers.
    stack.emulator.configure(
        {"gpt-4o-mini": {"script": [{"status": 500, "latency_ms": 20}, {"status": 200, "latency_ms": 300}]}}
    )
    job = stack.wait(stack.submit(HELLO).json()["id"])
    assert job["status"] == "succeeded", job
    failed, answered = job["attempts"]
    assert failed["status"] == "failed" and answered["status"] == "succeeded"
    assert job["latency_ms"] == answered["latency_ms"]  # the answering call alone
    assert 300 <= job["latency_ms"] < 2000
    # Submit to finish holds the failed call, the backoff and the answering call.
    # (the backoff is at least half of LLMQUEUE_RETRY_BASE_S, 0.2 s in tests).
    assert job["total_latency_ms"] >= job["latency_ms"] + failed["latency_ms"] + 90
