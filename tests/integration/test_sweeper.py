"""The sweeper recovers work whose message was lost: a job committed but never enqueued
(the broker was down when the API answered), and an attempt whose worker died after
claiming it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from core.types import ChatRequest
from jobstore import transitions
from jobstore.db import transaction
from jobstore.jobs import create_job, find_api_key
from jobstore.models import Attempt, Job
from tests.integration.conftest import Stack
from workers.sweeper import find_stranded, idle_broker_queues, sweep_once

REQUEST = ChatRequest.model_validate({"messages": [{"role": "user", "content": "lost in the post"}]})


def committed_but_never_enqueued(stack: Stack) -> str:
    with transaction() as session:
        owner = find_api_key(session, stack.key)
        assert owner is not None
        job, _ = create_job(
            session, owner_id=owner.id, request=REQUEST, strategy="manual", model="gpt-4o-mini"
        )
        session.flush()
        session.execute(
            update(Job).where(Job.id == job.id).values(updated_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        return job.id


def test_a_job_whose_enqueue_was_lost_is_dispatched_by_the_sweeper(stack: Stack) -> None:
    job_id = committed_but_never_enqueued(stack)
    assert stack.job(job_id)["status"] == "queued"
    steps = find_stranded(datetime.now(UTC), idle_queues=idle_broker_queues)
    assert any(getattr(s, "job_id", None) == job_id for s in steps)
    sweep_once()
    job = stack.wait(job_id)
    assert job["status"] == "succeeded"
    assert len(job["attempts"]) == 1


def test_an_attempt_whose_claim_expired_is_taken_over(stack: Stack) -> None:
    job_id = committed_but_never_enqueued(stack)
    now = datetime.now(UTC)
    with transaction() as session:
        attempt = transitions.begin_dispatch(
            session,
            job_id,
            provider="openai",
            model="gpt-4o-mini",
            deployment="openai/gpt-4o-mini",
            explanation=None,
        )
        assert attempt is not None
        # A worker claimed it and died: its lease ran out a minute ago.
        assert transitions.claim_attempt(
            session, attempt.id, "dead-worker", now - timedelta(minutes=3), now - timedelta(minutes=1)
        )
        attempt_id = attempt.id
    assert stack.job(job_id)["status"] == "running"
    sweep_once()
    job = stack.wait(job_id)
    assert job["status"] == "succeeded"
    with transaction() as session:
        stored = session.get(Attempt, attempt_id)
        assert stored is not None and stored.claim_token != "dead-worker"
