"""Provider batches in the job store: planning's writes, the poll loop's scan, a worker's lease,
and the reads that submitting and writing results need.

A line is a job's attempt claimed by its provider batch: the attempt is `running` with the
provider batch's id as its claim token and a lease that never runs out (the sweeper must not
hand it to an online worker while the provider has it), and the job is `running` with
`provider_batch_id` set. Only the holder of that token may write the line's result
(`jobstore.claims.still_held`, `transitions.record_successes`), so a line is written once
however many times, and by however many workers, the provider's results are read.

A worker looks at a provider batch only under its lease (`take`): the lease keeps two workers
from doing the same work at once and lets another take over when one dies; it is not what
keeps a line from being written twice (the claim token is). Times are the callers' (`now`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, lazyload

from jobstore.batch_models import (
    ACTIVE_PROVIDER_BATCH_PHASES,
    Batch,
    BatchStatus,
    ProviderBatch,
    ProviderBatchCancel,
    ProviderBatchPhase,
)
from jobstore.batches import ECONOMY_HELD_UNTIL, HELD_UNTIL
from jobstore.claims import Claimed
from jobstore.models import ENDED_JOB_STATUSES, Attempt, AttemptStatus, Job, JobStatus, new_id

# A line's attempt is held by its provider batch until the line is written: never by a lease.
LINE_LEASE_UNTIL = datetime(9200, 1, 1, tzinfo=UTC)
# Phases in which the provider batch's input tokens count against the deployment's quota.
ENQUEUED_PHASES = (ProviderBatchPhase.PLANNED, ProviderBatchPhase.SUBMITTING, ProviderBatchPhase.SUBMITTED)

_jobs = cast(Table, Job.__table__)
_attempts = cast(Table, Attempt.__table__)


# ---------------------------------------------------------------- planning (workers/economy_feeder.py)


def batches_to_plan(session: Session) -> list[str]:
    """Batches in progress with jobs waiting for economy planning, oldest first."""
    waiting = exists().where(
        Job.batch_id == Batch.id, Job.not_before == ECONOMY_HELD_UNTIL, Job.status == JobStatus.QUEUED
    )
    return list(
        session.scalars(
            select(Batch.id)
            .where(Batch.status == BatchStatus.IN_PROGRESS, waiting)
            .order_by(Batch.created_at)
        )
    )


def lock_for_planning(session: Session, batch_id: str) -> Batch | None:
    """The batch, locked for this transaction; None when it is no longer in progress or another
    planner holds it (skipped, not waited for)."""
    return session.scalar(
        select(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.IN_PROGRESS)
        .with_for_update(skip_locked=True)
    )


def economy_held(session: Session, batch_id: str, limit: int) -> list[Job]:
    """Up to `limit` of the batch's jobs waiting for economy planning, in line order."""
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.batch_id == batch_id,
                Job.not_before == ECONOMY_HELD_UNTIL,
                Job.status == JobStatus.QUEUED,
            )
            .order_by(Job.line_number, Job.id)
            .limit(limit)
            .options(lazyload(Job.attempts))
        )
    )


def enqueued_tokens(session: Session) -> dict[str, int]:
    """Input tokens in provider batches not yet ended, by deployment (the enqueued-token quota's use)."""
    rows = session.execute(
        select(ProviderBatch.deployment, func.sum(ProviderBatch.input_tokens))
        .where(ProviderBatch.phase.in_(ENQUEUED_PHASES))
        .group_by(ProviderBatch.deployment)
    )
    return {deployment: int(tokens or 0) for deployment, tokens in rows}


_RELEASE_ONLINE = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("p_id"), _jobs.c.not_before == ECONOMY_HELD_UNTIL)
    .values(not_before=HELD_UNTIL, routing=bindparam("p_routing", type_=_jobs.c.routing.type))
)


def release_online(session: Session, routing_by_job: dict[str, dict[str, Any]]) -> None:
    """These economy-held jobs go online: held for the feeder, with their routing options
    (which now carry economy mode's reason)."""
    if routing_by_job:
        session.connection().execute(
            _RELEASE_ONLINE, [{"p_id": job_id, "p_routing": r} for job_id, r in routing_by_job.items()]
        )


@dataclass(frozen=True)
class PlannedLine:
    """A job joining a provider batch: what its attempt holds and what its record says."""

    job_id: str
    reserved_usd: Decimal
    max_tokens: int | None  # the output cap a budget set, when the job set none
    explanation: dict[str, Any]
    routing: dict[str, Any]


@dataclass(frozen=True)
class ProviderBatchPlan:
    id: str  # made by the planner, so each job's record can name it
    batch_id: str
    owner_id: str
    provider: str
    deployment: str
    model: str
    input_tokens: int
    input_bytes: int
    estimated_cost_usd: Decimal
    estimated_online_cost_usd: Decimal
    reason: str
    give_up_at: datetime
    deadline_at: datetime | None


_EXPLAIN = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("p_id"))
    .values(
        explanation=bindparam("p_explanation", type_=_jobs.c.explanation.type),
        routing=bindparam("p_routing", type_=_jobs.c.routing.type),
    )
)


def add_provider_batch(
    session: Session, plan: ProviderBatchPlan, lines: Sequence[PlannedLine], now: datetime
) -> tuple[ProviderBatch | None, list[PlannedLine]]:
    """A provider batch of these economy-held jobs, each one's attempt claimed by it, due for
    submission now. Returns it and the lines it took (a job cancelled meanwhile is not taken);
    None when it took none."""
    pb = ProviderBatch(
        id=plan.id,
        batch_id=plan.batch_id,
        owner_id=plan.owner_id,
        provider=plan.provider,
        deployment=plan.deployment,
        model=plan.model,
        phase=ProviderBatchPhase.PLANNED,
        input_tokens=plan.input_tokens,
        input_bytes=plan.input_bytes,
        estimated_cost_usd=plan.estimated_cost_usd,
        estimated_online_cost_usd=plan.estimated_online_cost_usd,
        reason=plan.reason,
        give_up_at=plan.give_up_at,
        deadline_at=plan.deadline_at,
        next_poll_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(pb)
    session.flush()
    connection = session.connection()
    numbers: dict[str, int] = dict(
        connection.execute(
            update(_jobs)
            .where(
                _jobs.c.id.in_([line.job_id for line in lines]),
                _jobs.c.status == JobStatus.QUEUED.value,
                _jobs.c.not_before == ECONOMY_HELD_UNTIL,
            )
            .values(
                status=JobStatus.RUNNING.value,
                provider=plan.provider,
                model=plan.model,
                deployment=plan.deployment,
                attempt_count=_jobs.c.attempt_count + 1,
                not_before=None,
                provider_batch_id=pb.id,
            )
            .returning(_jobs.c.id, _jobs.c.attempt_count)
        ).all()
    )
    taken = [line for line in lines if line.job_id in numbers]
    if not taken:
        session.delete(pb)
        session.flush()
        return None, []
    connection.execute(
        _EXPLAIN,
        [{"p_id": t.job_id, "p_explanation": t.explanation, "p_routing": t.routing} for t in taken],
    )
    connection.execute(
        insert(_attempts),
        [
            {
                "id": new_id("att"),
                "job_id": line.job_id,
                "number": numbers[line.job_id],
                "provider": plan.provider,
                "model": plan.model,
                "deployment": plan.deployment,
                "status": AttemptStatus.RUNNING.value,
                "claim_token": pb.id,
                "lease_until": LINE_LEASE_UNTIL,
                "started_at": now,
                "reserved_usd": line.reserved_usd,
                "max_tokens": line.max_tokens,
                "provider_batch_id": pb.id,
            }
            for line in taken
        ],
    )
    pb.line_count = len(taken)
    return pb, taken


# ---------------------------------------------------------------- the poll loop and the lease


def request_cancels(session: Session, now: datetime) -> int:
    """Provider batches whose llmqueue batch was cancelled: asked to stop (once), due now."""
    cancelled = select(Batch.id).where(Batch.status.in_((BatchStatus.CANCELLING, BatchStatus.CANCELLED)))
    changed = session.execute(
        update(ProviderBatch)
        .where(
            ProviderBatch.phase.in_(ACTIVE_PROVIDER_BATCH_PHASES),
            ProviderBatch.cancel_requested_at.is_(None),
            ProviderBatch.batch_id.in_(cancelled),
        )
        .values(cancel_requested_at=now, cancel_reason=ProviderBatchCancel.BATCH_CANCELLED, next_poll_at=now)
    )
    return int(changed.rowcount or 0)  # type: ignore[attr-defined]


def take_due(
    session: Session, now: datetime, resend_after_s: float, limit: int = 200
) -> list[tuple[str, str]]:
    """Provider batches due for a look that no worker holds, as (id, phase); each is pushed
    `resend_after_s` ahead, so it is sent again only if no worker takes it by then."""
    rows = session.execute(
        select(ProviderBatch.id, ProviderBatch.phase)
        .where(
            ProviderBatch.phase != ProviderBatchPhase.SETTLED,
            ProviderBatch.next_poll_at <= now,
            or_(ProviderBatch.lease_until.is_(None), ProviderBatch.lease_until < now),
        )
        .order_by(ProviderBatch.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(
            update(ProviderBatch)
            .where(ProviderBatch.id.in_([r.id for r in rows]))
            .values(next_poll_at=now + timedelta(seconds=resend_after_s))
        )
    return [(r.id, r.phase) for r in rows]


def take(session: Session, pb_id: str, token: str, now: datetime, lease_s: float) -> ProviderBatch | None:
    """The provider batch under this worker's lease, or None: settled, or another worker's."""
    changed = session.execute(
        update(ProviderBatch)
        .where(
            ProviderBatch.id == pb_id,
            ProviderBatch.phase != ProviderBatchPhase.SETTLED,
            or_(ProviderBatch.lease_until.is_(None), ProviderBatch.lease_until < now),
        )
        .values(lease_until=now + timedelta(seconds=lease_s), lease_token=token)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.scalar(select(ProviderBatch).where(ProviderBatch.id == pb_id))


def update_held(session: Session, pb_id: str, token: str, **values: Any) -> bool:
    """Change the provider batch if this worker still holds its lease."""
    changed = session.execute(
        update(ProviderBatch)
        .where(ProviderBatch.id == pb_id, ProviderBatch.lease_token == token)
        .values(**values)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


def next_poll(at: datetime) -> Any:
    """`next_poll_at` as SQL: `at`, or at once when a cancel was asked for and not yet sent (a
    cancel that arrived while this worker held the provider batch is not left waiting)."""
    asked = ProviderBatch.cancel_requested_at.is_not(None) & ProviderBatch.cancel_sent_at.is_(None)
    return case(
        (asked, ProviderBatch.cancel_requested_at),
        else_=bindparam("p_next_poll", at, type_=ProviderBatch.next_poll_at.type),
    )


def let_go(session: Session, pb_id: str, token: str, **values: Any) -> bool:
    """`update_held`, and the lease given up."""
    return update_held(session, pb_id, token, lease_until=None, lease_token=None, **values)


def batch_status(session: Session, batch_id: str, *, lock: bool = False) -> str | None:
    """The llmqueue batch's status; `lock`: shared, so a cancel waits for this transaction
    (and this one, once it has it, sees a cancel committed before)."""
    query = select(Batch.status).where(Batch.id == batch_id)
    status: str | None = session.scalar(query.with_for_update(read=True) if lock else query)
    return status


# ---------------------------------------------------------------- lines


@dataclass(frozen=True)
class LineRequest:
    attempt_id: str  # the line's custom_id at the provider
    request: dict[str, Any]
    max_tokens: int | None


def line_requests(session: Session, pb_id: str) -> list[LineRequest]:
    """The requests of the provider batch's lines still held by it, in the batch's line order."""
    rows = session.execute(
        select(Attempt.id, Job.request, Attempt.max_tokens)
        .join(Job, Job.id == Attempt.job_id)
        .where(
            Attempt.provider_batch_id == pb_id,
            Attempt.status == AttemptStatus.RUNNING,
            Attempt.claim_token == pb_id,
        )
        .order_by(Job.line_number, Job.id)
    )
    return [LineRequest(attempt_id, request, max_tokens) for attempt_id, request, max_tokens in rows]


@dataclass(frozen=True)
class HeldLine:
    """A line still held by its provider batch, as its result is written."""

    claim: Claimed
    routing: dict[str, Any]
    job_open: bool


def held_lines(
    session: Session, pb_id: str, attempt_ids: Sequence[str] | None = None, limit: int | None = None
) -> list[HeldLine]:
    """Lines (of `attempt_ids`, else any) still running under the provider batch's claim."""
    query = (
        select(Attempt, Job.batch_id, Job.owner_id, Job.deadline_at, Job.routing, Job.status)
        .join(Job, Job.id == Attempt.job_id)
        .where(
            Attempt.provider_batch_id == pb_id,
            Attempt.status == AttemptStatus.RUNNING,
            Attempt.claim_token == pb_id,
        )
    )
    if attempt_ids is not None:
        query = query.where(Attempt.id.in_(list(attempt_ids)))
    if limit is not None:
        query = query.order_by(Attempt.id).limit(limit)
    lines = []
    for attempt, batch_id, owner_id, deadline_at, routing, status in session.execute(query):
        claim = Claimed(
            attempt.id,
            attempt.job_id,
            attempt.number,
            attempt.provider,
            attempt.model,
            attempt.deployment,
            pb_id,
            Decimal(attempt.reserved_usd or 0),
            attempt.max_tokens,
            {},
            False,
            batch_id,
            owner_id,
            deadline_at,
            None,
        )
        lines.append(HeldLine(claim, dict(routing or {}), status not in ENDED_JOB_STATUSES))
    return lines


def leave_provider_batch(session: Session, job_id: str, routing: dict[str, Any]) -> None:
    """The job's line goes back online: it is no longer the provider batch's, and its routing
    record says why."""
    session.execute(update(Job).where(Job.id == job_id).values(provider_batch_id=None, routing=routing))


def close_line(
    session: Session, attempt_id: str, token: str, error_type: str, message: str, now: datetime
) -> bool:
    """A line that never ran and never will (its batch was cancelled): running -> cancelled."""
    changed = session.execute(
        update(Attempt)
        .where(
            Attempt.id == attempt_id, Attempt.status == AttemptStatus.RUNNING, Attempt.claim_token == token
        )
        .values(status=AttemptStatus.CANCELLED, error_type=error_type, error_message=message, finished_at=now)
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LineTally:
    succeeded: int = 0
    online: int = 0
    failed: int = 0
    cancelled: int = 0
    held: int = 0  # not written yet
    cost_usd: Decimal = Decimal(0)


def line_tally(session: Session, pb_id: str) -> LineTally:
    """How the provider batch's lines ended so far, counted from their attempts."""
    went_online = Job.provider_batch_id.is_distinct_from(pb_id)
    rows = session.execute(
        select(Attempt.status, went_online, func.count(), func.coalesce(func.sum(Attempt.cost_usd), 0))
        .join(Job, Job.id == Attempt.job_id)
        .where(Attempt.provider_batch_id == pb_id)
        .group_by(Attempt.status, went_online)
    )
    counts = {"succeeded": 0, "online": 0, "failed": 0, "cancelled": 0, "held": 0}
    cost = Decimal(0)
    for status, online, n, spent in rows:
        cost += Decimal(spent)
        if status == AttemptStatus.SUCCEEDED:
            counts["succeeded"] += n
        elif status == AttemptStatus.FAILED:
            counts["online" if online else "failed"] += n
        elif status == AttemptStatus.CANCELLED:
            counts["cancelled"] += n
        else:
            counts["held"] += n
    return LineTally(**counts, cost_usd=cost)


# ---------------------------------------------------------------- what the API shows


def of_batch(session: Session, batch_id: str) -> list[ProviderBatch]:
    return list(
        session.scalars(
            select(ProviderBatch).where(ProviderBatch.batch_id == batch_id).order_by(ProviderBatch.created_at)
        )
    )


class JobPath(StrEnum):
    """Which way a batch's job went (the keys of `jobs_by_path`)."""

    PROVIDER_BATCH = "provider_batch"  # in a provider batch, or answered, failed or cancelled by one
    ONLINE = "online"  # online calls (including lines a provider batch sent back)
    DECIDING = "deciding"  # waiting for economy planning
    NONE = "none"  # ended without being sent anywhere (a bad line, cancelled while waiting)


def jobs_by_path(session: Session, batch_id: str) -> dict[str, int]:
    path = case(
        (Job.provider_batch_id.is_not(None), JobPath.PROVIDER_BATCH.value),
        (Job.not_before == ECONOMY_HELD_UNTIL, JobPath.DECIDING.value),
        ((Job.attempt_count == 0) & Job.status.in_(ENDED_JOB_STATUSES), JobPath.NONE.value),
        else_=JobPath.ONLINE.value,
    ).label("path")
    counts = {p.value: 0 for p in JobPath}
    for name, n in session.execute(select(path, func.count()).where(Job.batch_id == batch_id).group_by(path)):
        counts[name] = int(n)
    return counts
