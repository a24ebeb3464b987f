"""What follows a provider call: its outcome written to the job store, and what comes next.

The engine (`workers/engine.py`) makes the calls; this module records them. Successes are
written many at a time, in one transaction with their cost settled in the ledger, and only
the attempts still held under their claim token are written (a result and its cost are
written once per attempt, whatever the broker redelivers). A failure is recorded and then
does what `workers/policy.py` decides: retry the same deployment (the retry keeps the
reservation), fail over (routed here, in the same transaction, with the dispatcher's own
function), or fail the job. Attempts a claim did not take are looked into
(`investigate`): finished ones are repaired, early ones sent again when due.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import aware, utcnow
from core.errors import failover_type
from core.settings import Settings
from jobstore import claims, ledger, transitions
from jobstore.claims import Claimed
from jobstore.db import transaction
from jobstore.embedding_jobs import CallVectors, insert_vectors
from jobstore.ledger import SoftAlert
from jobstore.models import Attempt, AttemptStatus, Job, JobStatus
from routing.catalog import Catalog
from workers import metrics
from workers.dispatch import priority_of, route_queued_job
from workers.next_step import NextStep, Nothing, SendAttempt, SendDispatch
from workers.policy import Action, Fail, Failover, RetryPolicy, after_failure
from workers.providers.errors import ProviderError

log = logging.getLogger(__name__)
_rng = random.Random()
BREAKER_OPEN = "circuit breaker open"


@dataclass(frozen=True)
class Succeeded:
    claim: Claimed
    outcome: transitions.CallOutcome
    vectors: CallVectors | None = None  # issue 14: an embedding call's (workers/embedding_calls.py)


@dataclass(frozen=True)
class Failed:
    claim: Claimed
    error: ProviderError
    latency_ms: float | None = None
    action: Action | None = None  # overrides the error kind's own (a refusing breaker, an adapter bug)
    breaker_open: bool = False  # the deployment's breaker is open after this failure


@dataclass
class Written:
    """What a write committed, for the side effects that follow it."""

    steps: list[NextStep]
    succeeded: list[Succeeded]
    alerts: list[SoftAlert]


def consecutive_failures_on(attempts: Iterable[Attempt], deployment: str) -> int:
    """Failed attempts on this deployment since the job last moved to it."""
    count = 0
    for attempt in sorted(attempts, key=lambda a: a.number, reverse=True):
        if attempt.deployment != deployment:
            break
        if attempt.status == AttemptStatus.FAILED:
            count += 1
    return count


def write_successes(items: Sequence[Succeeded], now: datetime) -> Written:
    """Write these calls' results and settle their costs, in one transaction. A call whose claim
    was lost meanwhile (its lease ran out and another worker took it) is not written."""
    with transaction() as session:
        held = claims.still_held(session, ((i.claim.id, i.claim.token) for i in items))
        written = [i for i in items if i.claim.id in held]
        transitions.record_successes(session, [(i.claim, i.claim.token, i.outcome) for i in written], now)
        insert_vectors(session, [(i.claim.job_id, i.vectors) for i in written if i.vectors])  # issue 14
        alerts = settle(session, written, now)
    lost = len(items) - len(written)
    if lost:
        log.warning("%d results not written: their claims were lost (the call was taken over)", lost)
    steps: list[NextStep] = [
        Nothing("succeeded", ended_batch=i.claim.batch_id, ended=True, job_id=i.claim.job_id) for i in written
    ]
    return Written(steps, written, alerts)


def settle(session: Session, items: Sequence[Succeeded], now: datetime) -> list[SoftAlert]:
    """Each call's real cost replaces its reservation, one statement per key (and batch)."""
    groups: dict[tuple[str, str | None], list[Succeeded]] = defaultdict(list)
    for item in items:
        groups[(item.claim.owner_id, item.claim.batch_id)].append(item)
    alerts: list[SoftAlert] = []
    for (owner_id, batch_id), group in groups.items():
        alerts += ledger.settle(
            session,
            owner_id,
            batch_id,
            reserved=sum((i.claim.reserved_usd for i in group), Decimal(0)),
            cost=sum((i.outcome.cost_usd for i in group), Decimal(0)),
            now=now,
        )
    return alerts


def write_failure(item: Failed, *, settings: Settings, catalog: Catalog, now: datetime) -> NextStep:
    """Record a failed call and do what the policy decides, in one transaction."""
    claim, error = item.claim, item.error
    with transaction() as session:
        job = session.get(Job, claim.job_id)
        if job is None:
            return Nothing(f"job {claim.job_id} not found")
        decision = after_failure(
            error.kind,
            error.message,
            failures_here=consecutive_failures_on(job.attempts, claim.deployment) + 1,
            breaker_open=item.breaker_open,
            retry_after=error.retry_after,
            deadline=aware(job.deadline_at) if job.deadline_at else None,
            now=now,
            policy=RetryPolicy.from_settings(settings),
            rng=_rng,
            action=item.action,
        )
        if not transitions.record_failure(
            session,
            claim,
            claim.token,
            error_type=failover_type(error.kind) if isinstance(decision, Failover) else error.kind.value,
            message=error.message,
            retry_after_s=error.retry_after,
            latency_ms=item.latency_ms,
            now=now,
        ):
            return Nothing("lost the claim")
        log.info("attempt %s on %s: %s -> %s", claim.id, claim.deployment, error.kind, decision)
        metrics.after_failure(claim.provider, claim.deployment, decision)
        if not isinstance(decision, Fail | Failover):  # a retry: the same call again, same reservation
            retry = transitions.schedule_retry(
                session,
                claim,
                now + timedelta(seconds=decision.countdown),
                reserved_usd=claim.reserved_usd,
                max_tokens=claim.max_tokens,
            )
            if retry is None:
                ledger.release(session, claim.owner_id, claim.batch_id, claim.reserved_usd)
                return Nothing("job closed")
            return SendAttempt(
                retry.id,
                retry.provider,
                decision.countdown,
                priority=priority_of(job),
                deployment=retry.deployment,
            )
        ledger.release(session, claim.owner_id, claim.batch_id, claim.reserved_usd)
        if isinstance(decision, Fail):
            transitions.fail_job(
                session, job.id, error_type=decision.error, message=decision.message, now=now
            )
            return Nothing(decision.error.value, ended_batch=claim.batch_id, ended=True, job_id=claim.job_id)
        if not transitions.requeue(session, job.id):
            return Nothing("job closed")
        return route_on(session, job, catalog, now)


def route_on(session: Session, job: Job, catalog: Catalog, now: datetime) -> NextStep:
    """Route a failed-over job now, in the transaction that recorded the failure: one commit
    and no queue hop. Routing reads Redis; if that (or anything in it) fails, only the
    routing is undone (a savepoint) and the job goes to the dispatcher, the failure kept."""
    try:
        with session.begin_nested():
            return route_queued_job(session, job, catalog=catalog, now=now)
    except Exception:
        log.warning("routing the failover of job %s here failed; the dispatcher will", job.id, exc_info=True)
        return SendDispatch(job.id, priority=priority_of(job))


def release_closed(
    session: Session, closed: Sequence[Claimed], revoked: Collection[str] = ()
) -> list[NextStep]:
    """Attempts claimed for jobs that had ended (a cancel), or that the claim cancelled because
    their key was revoked (`revoked`, job ids: ended now, for those waiting on them): their
    reservations go back."""
    for claim in closed:
        ledger.release(session, claim.owner_id, claim.batch_id, claim.reserved_usd)
    return [
        Nothing("the key was revoked", ended_batch=c.batch_id, ended=True, job_id=c.job_id)
        if c.job_id in revoked
        else Nothing("job ended before its call", ended_batch=c.batch_id)
        for c in closed
    ]


def investigate(attempt_ids: Sequence[str], now: datetime) -> list[NextStep]:
    """Why these attempts were not claimed, and what to send: nothing, a repair, or the same
    message again when an attempt that arrived early is due."""
    if not attempt_ids:
        return []
    steps: list[NextStep] = []
    with transaction() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.id.in_(list(attempt_ids)))).all()
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_([a.job_id for a in attempts])))}
        for attempt in attempts:
            job = jobs.get(attempt.job_id)
            if job is None or job.status in (JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED):
                steps.append(Nothing("job ended"))
            elif attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELLED):
                steps.append(repair(job))
            elif attempt.status == AttemptStatus.PENDING and attempt.not_before is not None:
                wait = (aware(attempt.not_before) - now).total_seconds()
                steps.append(
                    SendAttempt(
                        attempt.id, attempt.provider, max(0.0, wait), priority_of(job), attempt.deployment
                    )
                )
            else:  # running under another claim: if its worker dies, the sweeper takes it over
                steps.append(Nothing("running elsewhere"))
    return steps


def repair(job: Job) -> NextStep:
    """A redelivered message for a finished attempt: resend whatever its commit promised
    (a crash between commit and send would otherwise strand the job)."""
    if job.status == JobStatus.QUEUED:
        return SendDispatch(job.id, priority=priority_of(job))
    latest = max(job.attempts, key=lambda a: a.number, default=None)
    if latest is not None and latest.status == AttemptStatus.PENDING:
        wait = (aware(latest.not_before) - utcnow()).total_seconds() if latest.not_before else 0.0
        return SendAttempt(latest.id, latest.provider, max(0.0, wait), priority_of(job), latest.deployment)
    return Nothing("attempt already finished")
