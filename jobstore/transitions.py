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
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, case, insert, literal_column, select, update
from sqlalchemy.orm import Session

from jobstore import ledger
from jobstore.models import OPEN_JOB_STATUSES, Attempt, AttemptStatus, Job, JobStatus, new_id


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
    emulated: bool = False  # answered by the built-in emulator, not the provider


# The hot path's statements (every job is dispatched, claimed and recorded) are Core statements on
# the tables, built once here with named parameters: building an ORM UPDATE per call, its
# cache key and the ORM's session synchronisation cost more CPU than the provider call.
# They neither flush the session first nor update ORM objects it holds: callers read what
# these functions return, not a Job or Attempt loaded before them.
_attempts = cast(Table, Attempt.__table__)
_jobs = cast(Table, Job.__table__)


def _param(column: Any, name: str) -> Any:
    return bindparam(name, type_=column.type)


def _changed(result: Any) -> bool:
    return bool(result.rowcount == 1)


@dataclass(frozen=True)
class NewAttempt:
    """The attempt `begin_dispatch` created (pending, not yet sent)."""

    id: str
    job_id: str
    number: int
    provider: str
    model: str
    deployment: str


_DISPATCH_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("p_job_id"), _jobs.c.status == JobStatus.QUEUED.value)
    .values(
        status=JobStatus.DISPATCHED.value,
        provider=bindparam("p_provider"),
        model=bindparam("p_model"),
        deployment=bindparam("p_deployment"),
        explanation=_param(_jobs.c.explanation, "p_explanation"),
        attempt_count=_jobs.c.attempt_count + 1,
        not_before=None,
    )
    .returning(_jobs.c.attempt_count)
)
INSERT_ATTEMPT = insert(_attempts)


def begin_dispatch(
    session: Session,
    job_id: str,
    *,
    provider: str,
    model: str,
    deployment: str,
    explanation: dict[str, Any] | None,
    reserved_usd: Decimal = Decimal(0),
    max_tokens: int | None = None,
) -> NewAttempt | None:
    """queued -> dispatched with a new pending attempt; None if the job was not queued."""
    connection = session.connection()
    number = connection.execute(
        _DISPATCH_JOB,
        {
            "p_job_id": job_id,
            "p_provider": provider,
            "p_model": model,
            "p_deployment": deployment,
            "p_explanation": explanation,
        },
    ).scalar()
    if number is None:
        return None
    attempt = NewAttempt(new_id("att"), job_id, number, provider, model, deployment)
    connection.execute(
        INSERT_ATTEMPT,
        {
            "id": attempt.id,
            "job_id": job_id,
            "number": number,
            "provider": provider,
            "model": model,
            "deployment": deployment,
            "reserved_usd": reserved_usd,
            "max_tokens": max_tokens,
        },
    )
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
    owner_id: str = ""


_CLAIM_ATTEMPT = (
    update(_attempts)
    .where(
        _attempts.c.id == bindparam("p_attempt_id"),
        (_attempts.c.status == AttemptStatus.PENDING.value)
        | (
            (_attempts.c.status == AttemptStatus.RUNNING.value)
            & (_attempts.c.lease_until < _param(_attempts.c.lease_until, "p_now"))
        ),
    )
    .values(
        status=AttemptStatus.RUNNING.value,
        claim_token=bindparam("p_token"),
        lease_until=_param(_attempts.c.lease_until, "p_lease_until"),
        started_at=_param(_attempts.c.started_at, "p_now"),
    )
    .returning(_attempts.c.job_id, _attempts.c.provider, _attempts.c.model, _attempts.c.deployment)
)
_START_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("p_job_id"))
    .values(
        status=case(
            (_jobs.c.status == JobStatus.DISPATCHED.value, JobStatus.RUNNING.value), else_=_jobs.c.status
        )
    )
    .returning(_jobs.c.request, _jobs.c.stream, _jobs.c.batch_id, _jobs.c.owner_id)
)


def _claim(session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime) -> Any:
    return (
        session.connection()
        .execute(
            _CLAIM_ATTEMPT,
            {"p_attempt_id": attempt_id, "p_token": token, "p_now": now, "p_lease_until": lease_until},
        )
        .one_or_none()
    )


def claim_for_call(
    session: Session, attempt_id: str, token: str, now: datetime, lease_until: datetime
) -> ClaimedCall | None:
    """pending (or running with an expired lease) -> running, held by `token` until
    lease_until; the job moves to running. Two statements: this is every call's hot path."""
    claimed = _claim(session, attempt_id, token, now, lease_until)
    if claimed is None:
        return None
    job_id, provider, model, deployment = claimed
    request, stream, batch_id, owner_id = session.connection().execute(_START_JOB, {"p_job_id": job_id}).one()
    return ClaimedCall(
        attempt_id, job_id, provider, model, deployment, request, bool(stream), batch_id, owner_id
    )


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


_OUTCOME_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "finish_reason",
    "emulated",
)
_COUNTED_COLUMNS = ("cost_usd", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
_SUCCEED_ATTEMPT = (
    update(_attempts)
    .where(
        _attempts.c.id == bindparam("p_attempt_id"),
        _attempts.c.status == AttemptStatus.RUNNING.value,
        _attempts.c.claim_token == bindparam("p_token"),
    )
    .values(
        status=AttemptStatus.SUCCEEDED.value,
        provider_request_id=_param(_attempts.c.provider_request_id, "p_provider_request_id"),
        rate_limit_headers=_param(_attempts.c.rate_limit_headers, "p_rate_limit_headers"),
        finished_at=_param(_attempts.c.finished_at, "p_now"),
        **{name: _param(_attempts.c[name], f"p_{name}") for name in _OUTCOME_COLUMNS},
    )
)


# The open statuses as SQL literals: a bound IN list is expanded afresh on every execution,
# and its 33 extra parameters would keep psycopg from caching the statement's conversion.
_STILL_OPEN = _jobs.c.status.in_([literal_column(f"'{status.value}'") for status in OPEN_JOB_STATUSES])


def _if_open(column: Any, name: str) -> Any:
    """The new value when the job is still open, else the column's own (a cancelled job keeps
    its state but still pays for the call)."""
    return case((_STILL_OPEN, _param(column, name)), else_=column)


_SUCCEED_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("p_job_id"))
    .values(
        **{name: _jobs.c[name] + _param(_jobs.c[name], f"p_{name}") for name in _COUNTED_COLUMNS},
        status=_if_open(_jobs.c.status, "p_status"),
        provider=_if_open(_jobs.c.provider, "p_provider"),
        model=_if_open(_jobs.c.model, "p_model"),
        deployment=_if_open(_jobs.c.deployment, "p_deployment"),
        result_text=_if_open(_jobs.c.result_text, "p_text"),
        tool_calls=_if_open(_jobs.c.tool_calls, "p_tool_calls"),
        finish_reason=_if_open(_jobs.c.finish_reason, "p_finish_reason"),
        latency_ms=_if_open(_jobs.c.latency_ms, "p_latency_ms"),
        emulated=_if_open(_jobs.c.emulated, "p_emulated"),
        error_type=_if_open(_jobs.c.error_type, "p_no_error_type"),
        error_message=_if_open(_jobs.c.error_message, "p_no_error_message"),
        finished_at=_if_open(_jobs.c.finished_at, "p_now"),
    )
)


def record_success(
    session: Session, attempt: AttemptLike, token: str, outcome: CallOutcome, now: datetime
) -> bool:
    """Write a call's result and cost once. The job takes the result if it is still open;
    its cost and tokens count the call even if it was cancelled meanwhile (it was paid for)."""
    attempt_row, job_row = _success_params(attempt, token, outcome, now)
    connection = session.connection()
    if not _changed(connection.execute(_SUCCEED_ATTEMPT, attempt_row)):
        return False
    # One statement: the cost always counts; the result only lands on a job still open.
    connection.execute(_SUCCEED_JOB, job_row)
    return True


def _success_params(
    attempt: AttemptLike, token: str, outcome: CallOutcome, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    values = {f"p_{name}": getattr(outcome, name) for name in _OUTCOME_COLUMNS}
    return (
        {
            "p_attempt_id": attempt.id,
            "p_token": token,
            "p_provider_request_id": outcome.provider_request_id,
            "p_rate_limit_headers": outcome.rate_limit_headers,
            "p_now": now,
            **values,
        },
        {
            **values,
            "p_job_id": attempt.job_id,
            "p_status": JobStatus.SUCCEEDED.value,
            "p_provider": attempt.provider,
            "p_model": attempt.model,
            "p_deployment": attempt.deployment,
            "p_text": outcome.text,
            "p_tool_calls": outcome.tool_calls,
            "p_no_error_type": None,
            "p_no_error_message": None,
            "p_now": now,
        },
    )


def record_successes(
    session: Session, results: list[tuple[AttemptLike, str, CallOutcome]], now: datetime
) -> None:
    """Write many calls' results at once (executemany: one round trip in psycopg's pipeline).
    The caller has locked these attempts and checked each is still running under its token
    (`jobstore.claims.still_held`), so every row is written."""
    if not results:
        return
    attempt_rows, job_rows = zip(*(_success_params(a, t, o, now) for a, t, o in results), strict=True)
    connection = session.connection()
    connection.execute(_SUCCEED_ATTEMPT, list(attempt_rows))
    connection.execute(_SUCCEED_JOB, list(job_rows))


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


def schedule_retry(
    session: Session,
    attempt: AttemptLike,
    not_before: datetime,
    *,
    reserved_usd: Decimal = Decimal(0),
    max_tokens: int | None = None,
) -> Attempt | None:
    """A new pending attempt on the same deployment, if the job is still open. It takes over the
    failed attempt's budget reservation and output cap (the same call, made again)."""
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
        reserved_usd=reserved_usd,
        max_tokens=max_tokens,
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


KEY_REVOKED = "key_revoked"
KEY_REVOKED_MESSAGE = (
    "the API key that submitted this job was revoked before it ran; no call was made for it after that"
)


def cancel_for_revoked_key(session: Session, job_id: str, now: datetime) -> bool:
    """A revoked key's open job is cancelled, never called, and says so (at dispatch, or at the
    claim of an attempt sent before the revocation)."""
    return cancel_job(session, job_id, now, error_type=KEY_REVOKED, message=KEY_REVOKED_MESSAGE)


def cancel_job(
    session: Session, job_id: str, now: datetime, *, error_type: str | None = None, message: str | None = None
) -> bool:
    """Cancel an open job. A call already in flight finishes and is paid for, but its
    result does not revive the job; attempts not yet started are never sent, and the budget
    they reserved at dispatch is given back. `error_type` and `message` say why when
    llmqueue, not its owner, cancelled it (a revoked key)."""
    # Lock the job's pending attempts before the job, the order a claim takes them in (attempt,
    # then job): the opposite order could deadlock with a worker claiming one of them.
    pending = session.execute(
        select(Attempt.id, Attempt.reserved_usd)
        .where(Attempt.job_id == job_id, Attempt.status == AttemptStatus.PENDING)
        .with_for_update()
    ).all()
    ended = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(OPEN_JOB_STATUSES))
        .values(status=JobStatus.CANCELLED, finished_at=now, error_type=error_type, error_message=message)
        .returning(Job.owner_id, Job.batch_id)
    ).first()
    if ended is None:
        return False
    session.execute(
        update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.status == AttemptStatus.PENDING)
        .values(status=AttemptStatus.CANCELLED, finished_at=now)
    )
    # The pending attempts were locked above, so a claim cannot have taken one meanwhile (a
    # claim that took one first made it running: its call's outcome settles its reservation).
    reserved = sum((Decimal(row.reserved_usd or 0) for row in pending), Decimal(0))
    ledger.release(session, ended.owner_id, ended.batch_id, reserved)
    return True
