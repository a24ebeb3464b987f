"""Job and attempt state changes, each a conditional UPDATE.

Every change names the state it expects (`... WHERE status = 'queued'`) and reports whether
it happened, so a redelivered message, a second worker or a retry after a crash changes
nothing twice. A call's result and cost are written only by the worker holding the
attempt's claim token, and only while the attempt is running: once per attempt, whatever
Celery redelivers. The caller owns the transaction.

    job:      queued -> dispatched -> running -> succeeded | failed
                 ^          |            |
                 +----------+------------+   (failover: back to the dispatcher)
              any open state -> cancelled
    attempt:  pending -> running -> succeeded | failed     (pending|running -> cancelled)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobstore.models import OPEN_JOB_STATUSES, Attempt, AttemptStatus, Job, JobStatus


@dataclass(frozen=True)
class CallOutcome:
    """What a succeeded call produced, as the store records it."""

    text: str
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    latency_ms: float
    provider_request_id: str | None
    rate_limit_headers: dict[str, str]


def _changed(result: Any) -> bool:
    return bool(result.rowcount == 1)


def begin_dispatch(
    session: Session,
    job_id: str,
    *,
    provider: str,
    model: str,
    deployment: str,
    explanation: dict[str, Any] | None,
) -> Attempt | None:
    """queued -> dispatched with a new pending attempt; None if the job was not queued."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.DISPATCHED,
            provider=provider,
            model=model,
            deployment=deployment,
            explanation=explanation,
            attempt_count=Job.attempt_count + 1,
            not_before=None,
        )
    )
    if not _changed(changed):
        return None
    number = session.scalar(select(Job.attempt_count).where(Job.id == job_id))
    attempt = Attempt(job_id=job_id, number=number, provider=provider, model=model, deployment=deployment)
    session.add(attempt)
    session.flush()
    return attempt


def latest_attempt(session: Session, job_id: str) -> Attempt | None:
    return session.scalar(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number.desc()))


def claim_attempt(
    session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime
) -> bool:
    """pending (or running with an expired lease) -> running, held by `token` until lease_until."""
    changed = session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            (Attempt.status == AttemptStatus.PENDING)
            | ((Attempt.status == AttemptStatus.RUNNING) & (Attempt.lease_until < now)),
        )
        .values(status=AttemptStatus.RUNNING, claim_token=token, lease_until=lease_until, started_at=now)
    )
    if not _changed(changed):
        return False
    job_id = session.scalar(select(Attempt.job_id).where(Attempt.id == attempt_id))
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.DISPATCHED)
        .values(status=JobStatus.RUNNING)
    )
    return True


def record_success(
    session: Session, attempt: Attempt, token: str, outcome: CallOutcome, now: datetime
) -> bool:
    """Write a call's result and cost once. The job takes the result if it is still open;
    its cost and tokens count the call even if it was cancelled meanwhile (it was paid for)."""
    changed = session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt.id, Attempt.status == AttemptStatus.RUNNING, Attempt.claim_token == token
        )
        .values(
            status=AttemptStatus.SUCCEEDED,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cached_input_tokens=outcome.cached_input_tokens,
            reasoning_tokens=outcome.reasoning_tokens,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            finish_reason=outcome.finish_reason,
            provider_request_id=outcome.provider_request_id,
            rate_limit_headers=outcome.rate_limit_headers,
            finished_at=now,
        )
    )
    if not _changed(changed):
        return False
    session.execute(
        update(Job)
        .where(Job.id == attempt.job_id)
        .values(
            cost_usd=Job.cost_usd + outcome.cost_usd,
            input_tokens=Job.input_tokens + outcome.input_tokens,
            output_tokens=Job.output_tokens + outcome.output_tokens,
            cached_input_tokens=Job.cached_input_tokens + outcome.cached_input_tokens,
            reasoning_tokens=Job.reasoning_tokens + outcome.reasoning_tokens,
        )
    )
    session.execute(
        update(Job)
        .where(Job.id == attempt.job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(
            status=JobStatus.SUCCEEDED,
            provider=attempt.provider,
            model=attempt.model,
            deployment=attempt.deployment,
            result_text=outcome.text,
            tool_calls=outcome.tool_calls,
            finish_reason=outcome.finish_reason,
            latency_ms=outcome.latency_ms,
            error_type=None,
            error_message=None,
            finished_at=now,
        )
    )
    return True


def record_failure(
    session: Session,
    attempt: Attempt,
    token: str,
    *,
    error_type: str,
    message: str,
    retry_after_s: float | None,
    latency_ms: float | None,
    now: datetime,
) -> bool:
    """running -> failed for the claim holder."""
    changed = session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt.id, Attempt.status == AttemptStatus.RUNNING, Attempt.claim_token == token
        )
        .values(
            status=AttemptStatus.FAILED,
            error_type=error_type,
            error_message=message,
            retry_after_s=retry_after_s,
            latency_ms=latency_ms,
            finished_at=now,
        )
    )
    return _changed(changed)


def schedule_retry(session: Session, attempt: Attempt, not_before: datetime) -> Attempt | None:
    """A new pending attempt on the same deployment, if the job is still open."""
    changed = session.execute(
        update(Job)
        .where(Job.id == attempt.job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(status=JobStatus.DISPATCHED, attempt_count=Job.attempt_count + 1)
    )
    if not _changed(changed):
        return None
    number = session.scalar(select(Job.attempt_count).where(Job.id == attempt.job_id))
    retry = Attempt(
        job_id=attempt.job_id,
        number=number,
        provider=attempt.provider,
        model=attempt.model,
        deployment=attempt.deployment,
        not_before=not_before,
    )
    session.add(retry)
    session.flush()
    return retry


def requeue(session: Session, job_id: str, *, not_before: datetime | None = None) -> bool:
    """Back to the dispatcher (failover, or waiting out a cooldown)."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(status=JobStatus.QUEUED, not_before=not_before)
    )
    return _changed(changed)


def fail_job(session: Session, job_id: str, *, error_type: str, message: str, now: datetime) -> bool:
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(status=JobStatus.FAILED, error_type=error_type, error_message=message, finished_at=now)
    )
    return _changed(changed)


def cancel_job(session: Session, job_id: str, now: datetime) -> bool:
    """Cancel an open job. A call already in flight finishes and is paid for, but its
    result does not revive the job; attempts not yet started are never sent."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(status=JobStatus.CANCELLED, finished_at=now)
    )
    if not _changed(changed):
        return False
    session.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.status == AttemptStatus.PENDING)
        .values(status=AttemptStatus.CANCELLED, finished_at=now)
    )
    return True
