"""The job store's state changes on real Postgres: each happens once, whoever repeats it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.types import ChatRequest
from jobstore import transitions
from jobstore.db import transaction
from jobstore.jobs import create_api_key, create_job
from jobstore.models import Job

REQUEST = ChatRequest.model_validate({"messages": [{"role": "user", "content": "once"}]})
OUTCOME = transitions.CallOutcome(
    text="done",
    tool_calls=None,
    finish_reason="stop",
    input_tokens=10,
    output_tokens=5,
    cached_input_tokens=0,
    reasoning_tokens=0,
    cost_usd=Decimal("0.00000450"),
    latency_ms=12.0,
    provider_request_id="r1",
    rate_limit_headers={},
)


def new_job() -> str:
    with transaction() as session:
        key, _ = create_api_key(session, "t")
        job, _ = create_job(session, owner_id=key.id, request=REQUEST, strategy="manual", model="gpt-4o-mini")
        return job.id


def dispatch(job_id: str) -> transitions.NewAttempt | None:
    with transaction() as session:
        return transitions.begin_dispatch(
            session,
            job_id,
            provider="openai",
            model="gpt-4o-mini",
            deployment="openai/gpt-4o-mini",
            explanation=None,
        )


def test_dispatch_twice_makes_one_attempt(database: str) -> None:
    job_id = new_job()
    assert dispatch(job_id) is not None
    assert dispatch(job_id) is None
    with transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempt_count == 1 and len(job.attempts) == 1


def test_result_and_cost_are_written_once(database: str) -> None:
    job_id = new_job()
    attempt = dispatch(job_id)
    assert attempt is not None
    now = datetime.now(UTC)
    with transaction() as session:
        assert transitions.claim_attempt(session, attempt.id, "w1", now, now + timedelta(seconds=60))
    with transaction() as session:  # a second worker cannot claim a live lease
        assert not transitions.claim_attempt(session, attempt.id, "w2", now, now + timedelta(seconds=60))
    for _ in range(3):  # a redelivered message repeats the write
        with transaction() as session:
            transitions.record_success(session, attempt, "w1", OUTCOME, now)
    with transaction() as session:  # the wrong claim holder writes nothing
        assert not transitions.record_success(session, attempt, "w2", OUTCOME, now)
    with transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "succeeded" and job.cost_usd == Decimal("0.00000450")
        assert job.input_tokens == 10 and job.output_tokens == 5


def test_cancel_keeps_an_in_flight_calls_cost_but_not_its_result(database: str) -> None:
    job_id = new_job()
    attempt = dispatch(job_id)
    assert attempt is not None
    now = datetime.now(UTC)
    with transaction() as session:
        assert transitions.claim_attempt(session, attempt.id, "w1", now, now + timedelta(seconds=60))
    with transaction() as session:
        assert transitions.cancel_job(session, job_id, now)
        assert not transitions.cancel_job(session, job_id, now)
    with transaction() as session:
        assert transitions.record_success(session, attempt, "w1", OUTCOME, now)
    with transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "cancelled" and job.result_text is None
        assert job.cost_usd == Decimal("0.00000450")
