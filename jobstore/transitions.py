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
from typing import Any, Protocol

from sqlalchemy import bindparam, case, select, update
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
    number = session.scalar(
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
        .returning(Job.attempt_count)
    )
    if number is None:
        return None
    attempt = Attempt(job_id=job_id, number=number, provider=provider, model=model, deployment=deployment)
    session.add(attempt)
    session.flush()
    return attempt


def latest_attempt(session: Session, job_id: str) -> Attempt | None:
    return session.scalar(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number.desc()))


class AttemptLike(Protocol):
    """What the writes below need of an attempt: an ORM row or a `ClaimedCall`."""

    @property
    def id(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def deployment(self) -> str: ...


@dataclass(frozen=True)
class ClaimedCall:
    """A claimed attempt with what its call needs, read by the claim itself."""

    id: str
    job_id: str
    provider: str
    model: str
    deployment: str
    request: dict[str, Any]
    stream: bool
    batch_id: str | None = None


def _claim(session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime) -> Any:
    return session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id,
            (Attempt.status == AttemptStatus.PENDING)
            | ((Attempt.status == AttemptStatus.RUNNING) & (Attempt.lease_until < now)),
        )
        .values(status=AttemptStatus.RUNNING, claim_token=token, lease_until=lease_until, started_at=now)
        .returning(Attempt.job_id, Attempt.provider, Attempt.model, Attempt.deployment)
    ).one_or_none()


def claim_for_call(
    session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime
) -> ClaimedCall | None:
    """pending (or running with an expired lease) -> running, held by `token` until
    lease_until; the job moves to running. Two statements: this is every call's hot path."""
    claimed = _claim(session, attempt_id, token, now, lease_until)
    if claimed is None:
        return None
    job_id, provider, model, deployment = claimed
    request, stream, batch_id = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status=case((Job.status == JobStatus.DISPATCHED, JobStatus.RUNNING.value), else_=Job.status))
        .returning(Job.request, Job.stream, Job.batch_id)
    ).one()
    return ClaimedCall(attempt_id, job_id, provider, model, deployment, request, bool(stream), batch_id)


def refuse_pending(
    session: Session, attempt_id: str, *, error_type: str, message: str, now: datetime
) -> str | None:
    """pending -> failed without a call (its deployment's breaker refused it before anyone
    claimed it); returns the job's id, or None when the attempt was not pending."""
    job_id: str | None = session.scalar(
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.status == AttemptStatus.PENDING)
        .values(status=AttemptStatus.FAILED, error_type=error_type, error_message=message, finished_at=now)
        .returning(Attempt.job_id)
    )
    return job_id


def claim_attempt(
    session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime
) -> bool:
    """`claim_for_call` for callers that need only to know whether it was claimed."""
    return claim_for_call(session, attempt_id, token, now, lease_until) is not None


def record_success(
    session: Session, attempt: AttemptLike, token: str, outcome: CallOutcome, now: datetime
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
    still_open = Job.status.in_(OPEN_JOB_STATUSES)

    def if_open(column: Any, value: Any) -> Any:
        return case((still_open, bindparam(None, value, type_=column.type)), else_=column)

    # One statement: the cost always counts; the result only lands on a job still open.
    session.execute(
        update(Job)
        .where(Job.id == attempt.job_id)
        .values(
            cost_usd=Job.cost_usd + outcome.cost_usd,
            input_tokens=Job.input_tokens + outcome.input_tokens,
            output_tokens=Job.output_tokens + outcome.output_tokens,
            cached_input_tokens=Job.cached_input_tokens + outcome.cached_input_tokens,
            reasoning_tokens=Job.reasoning_tokens + outcome.reasoning_tokens,
            status=if_open(Job.status, JobStatus.SUCCEEDED.value),
            provider=if_open(Job.provider, attempt.provider),
            model=if_open(Job.model, attempt.model),
            deployment=if_open(Job.deployment, attempt.deployment),
            result_text=if_open(Job.result_text, outcome.text),
            tool_calls=if_open(Job.tool_calls, outcome.tool_calls),
            finish_reason=if_open(Job.finish_reason, outcome.finish_reason),
            latency_ms=if_open(Job.latency_ms, outcome.latency_ms),
            error_type=if_open(Job.error_type, None),
            error_message=if_open(Job.error_message, None),
            finished_at=if_open(Job.finished_at, now),
        )
    )
    return True


def record_failure(
    session: Session,
    attempt: AttemptLike,
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


def schedule_retry(session: Session, attempt: AttemptLike, not_before: datetime) -> Attempt | None:
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
    # Lock the job's pending attempts before the job, the order a claim takes them in (attempt,
    # then job): the opposite order could deadlock with a worker claiming one of them.
    session.execute(
        select(Attempt.id)
        .where(Attempt.job_id == job_id, Attempt.status == AttemptStatus.PENDING)
        .with_for_update()
    ).all()
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
