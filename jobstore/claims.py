"""The provider workers' hot path in the job store: claim many attempts in one transaction,
keep their leases alive, and write many results in one transaction.

An attempt is claimed with a token and a lease: only the holder of the token may write its
result, and only while the attempt is running, so a result and its cost are written once
whatever the broker redelivers. A worker renews the leases of its calls every few seconds;
a worker that dies stops renewing, its leases run out, and the sweeper hands those attempts
to another worker within seconds. On Postgres, leases are judged by the database's clock
(`now()`), so the workers' clocks do not matter; the embedded SQLite store (one machine)
uses the caller's.

A claim requires the attempt's job to be open in the same transaction: a job cancelled
before the claim commits is never called, and its attempt is closed as cancelled. So does the
key that submitted it: an attempt sent before its key was revoked (waiting in a provider's
queue, or for capacity) is never called either; its job is cancelled as `key_revoked`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, cast

from sqlalchemy import DateTime, Float, Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from jobstore.models import OPEN_JOB_STATUSES, ApiKey, Attempt, AttemptStatus, Job, JobKind, JobStatus
from jobstore.transitions import cancel_for_revoked_key

_attempts = cast(Table, Attempt.__table__)
_jobs = cast(Table, Job.__table__)
_keys = cast(Table, ApiKey.__table__)
_TS = DateTime(timezone=True)


@dataclass(frozen=True)
class Claimed:
    """A claimed attempt with everything its call and its result need."""

    id: str
    job_id: str
    number: int
    provider: str
    model: str
    deployment: str
    token: str
    reserved_usd: Decimal
    max_tokens: int | None  # the attempt's own output cap (a budget's), if any
    request: dict[str, Any]
    stream: bool
    batch_id: str | None
    owner_id: str
    deadline_at: datetime | None
    request_tokens: int | None
    kind: str = JobKind.CHAT.value  # issue 14: an embedding job's call goes to workers/embedding_calls.py


@dataclass
class ClaimResult:
    claimed: list[Claimed] = field(default_factory=list)
    # Claimed, but its job had ended meanwhile (cancelled): closed as cancelled, never called.
    closed: list[Claimed] = field(default_factory=list)
    not_claimed: list[str] = field(default_factory=list)  # pending elsewhere, running, finished
    revoked: set[str] = field(default_factory=set)  # of `closed`, jobs cancelled now: their key was revoked


class Clock:
    """`now` and a lease's end as SQL: the database's clock on Postgres, the caller's on SQLite."""

    def __init__(self, dialect: str) -> None:
        self.server = dialect == "postgresql"
        self.now: Any = func.now() if self.server else bindparam("p_now", type_=_TS)
        self.lease_until: Any = (
            func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("p_lease_s", type_=Float))
            if self.server
            else bindparam("p_lease_until", type_=_TS)
        )

    def params(self, now: datetime, lease_s: float = 0.0) -> dict[str, Any]:
        if self.server:
            return {"p_lease_s": lease_s}
        return {"p_now": now, "p_lease_until": now + timedelta(seconds=lease_s)}


@cache
def _statements(dialect: str) -> dict[str, Any]:
    clock = Clock(dialect)
    ids: Any = bindparam("p_ids", expanding=True)
    claimable = or_(
        _attempts.c.status == AttemptStatus.PENDING.value,
        and_(_attempts.c.status == AttemptStatus.RUNNING.value, _attempts.c.lease_until < clock.now),
    )
    due = or_(_attempts.c.not_before.is_(None), _attempts.c.not_before <= clock.now)
    return {
        "clock": clock,
        "claim": (
            update(_attempts)
            .where(_attempts.c.id.in_(ids), claimable, due)
            .values(
                status=AttemptStatus.RUNNING.value,
                claim_token=bindparam("p_token"),
                lease_until=clock.lease_until,
                started_at=clock.now,
            )
            .returning(
                _attempts.c.id,
                _attempts.c.job_id,
                _attempts.c.number,
                _attempts.c.provider,
                _attempts.c.model,
                _attempts.c.deployment,
                _attempts.c.reserved_usd,
                _attempts.c.max_tokens,
            )
        ),
        # The job moves to running; one that ended (a cancel) is not returned, and its claim is undone.
        "start_jobs": (
            update(_jobs)
            .where(
                _jobs.c.id.in_(bindparam("p_job_ids", expanding=True)),
                _jobs.c.status.in_([JobStatus.DISPATCHED.value, JobStatus.RUNNING.value]),
                ~exists().where(_keys.c.id == _jobs.c.owner_id, _keys.c.revoked_at.is_not(None)),
            )
            .values(status=JobStatus.RUNNING.value)
            .returning(
                _jobs.c.id,
                _jobs.c.request,
                _jobs.c.stream,
                _jobs.c.batch_id,
                _jobs.c.owner_id,
                _jobs.c.deadline_at,
                _jobs.c.request_tokens,
                _jobs.c.kind,  # issue 14
            )
        ),
        "close": (
            update(_attempts)
            .where(_attempts.c.id.in_(ids), _attempts.c.claim_token == bindparam("p_token"))
            .values(status=AttemptStatus.CANCELLED.value, finished_at=clock.now)
        ),
        "renew": (
            update(_attempts)
            .where(
                _attempts.c.claim_token.in_(bindparam("p_tokens", expanding=True)),
                _attempts.c.status == AttemptStatus.RUNNING.value,
            )
            .values(lease_until=clock.lease_until)
        ),
    }


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def claim(
    session: Session, attempt_ids: Sequence[str], token: str, *, now: datetime, lease_s: float
) -> ClaimResult:
    """Claim every claimable attempt of `attempt_ids` for `token` until the lease runs out.
    Two statements whatever the number of ids: the claim, then the jobs' move to running."""
    result = ClaimResult()
    if not attempt_ids:
        return result
    statements = _statements(_dialect(session))
    clock: Clock = statements["clock"]
    connection = session.connection()
    rows = connection.execute(
        statements["claim"], {"p_ids": list(attempt_ids), "p_token": token, **clock.params(now, lease_s)}
    ).all()
    claimed_ids = {row.id for row in rows}
    result.not_claimed = [a for a in attempt_ids if a not in claimed_ids]
    if not rows:
        return result
    jobs = {
        job.id: job
        for job in connection.execute(
            statements["start_jobs"], {"p_job_ids": sorted({r.job_id for r in rows})}
        )
    }
    ended = [row for row in rows if row.job_id not in jobs]
    ended_jobs: dict[str, tuple[str, str | None]] = {}
    if ended:
        query = (
            select(Job.id, Job.owner_id, Job.batch_id, Job.status, ApiKey.revoked_at)
            .outerjoin(ApiKey, ApiKey.id == Job.owner_id)
            .where(Job.id.in_([r.job_id for r in ended]))
        )
        for job_id, owner_id, batch_id, status, revoked_at in session.execute(query):
            ended_jobs[job_id] = (owner_id, batch_id)
            if status in OPEN_JOB_STATUSES and revoked_at is not None:
                result.revoked.add(job_id)
    for row in rows:
        job = jobs.get(row.job_id)
        if job is not None:
            result.claimed.append(
                Claimed(
                    row.id,
                    row.job_id,
                    row.number,
                    row.provider,
                    row.model,
                    row.deployment,
                    token,
                    Decimal(row.reserved_usd or 0),
                    row.max_tokens,
                    job.request,
                    bool(job.stream),
                    job.batch_id,
                    job.owner_id,
                    job.deadline_at,
                    job.request_tokens,
                    job.kind,  # issue 14
                )
            )
        else:
            owner_id, batch_id = ended_jobs.get(row.job_id, ("", None))
            result.closed.append(
                Claimed(
                    row.id,
                    row.job_id,
                    row.number,
                    row.provider,
                    row.model,
                    row.deployment,
                    token,
                    Decimal(row.reserved_usd or 0),
                    row.max_tokens,
                    {},
                    False,
                    batch_id,
                    owner_id,
                    None,
                    None,
                )
            )
    if ended:
        connection.execute(
            statements["close"], {"p_ids": [r.id for r in ended], "p_token": token, **clock.params(now)}
        )
    for job_id in sorted(result.revoked):  # after its attempt: the order a claim locks them in
        cancel_for_revoked_key(session, job_id, now)
    return result


def renew(session: Session, tokens: Iterable[str], *, now: datetime, lease_s: float) -> int:
    """Push the leases of the running attempts these tokens hold `lease_s` past now."""
    tokens = list(tokens)
    if not tokens:
        return 0
    statements = _statements(_dialect(session))
    clock: Clock = statements["clock"]
    changed = session.connection().execute(
        statements["renew"], {"p_tokens": tokens, **clock.params(now, lease_s)}
    )
    return int(changed.rowcount or 0)


def still_held(session: Session, claims: Iterable[tuple[str, str]]) -> set[str]:
    """Of these (attempt id, token) claims, the attempts still running under their token, locked
    for this transaction (their results may be written)."""
    wanted = dict(claims)
    if not wanted:
        return set()
    rows = session.execute(
        select(Attempt.id, Attempt.claim_token)
        .where(Attempt.id.in_(list(wanted)), Attempt.status == AttemptStatus.RUNNING)
        .with_for_update()
    )
    return {attempt_id for attempt_id, token in rows if wanted.get(attempt_id) == token}


OPEN_STATUS_VALUES = tuple(status.value for status in OPEN_JOB_STATUSES)
