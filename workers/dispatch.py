"""The dispatcher: route a queued job to a deployment and hand it to that provider's queue.

`dispatch_job` is a plain function (the Celery task in `tasks.py` only sends what it
returns). It is safe to run twice for one job: the queued -> dispatched transition is
conditional, and a job found dispatched with its attempt still pending (a crash between
commit and send) has that attempt sent again. The decisions (`gate`, `cooldown_wake`, which
deployments a job failed over from) are pure functions of the job and the clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from core.clock import aware, utcnow
from core.errors import FAILOVER_PREFIX, JobError, kind_of
from core.settings import get_settings
from jobstore import ledger, transitions
from jobstore.batches import HELD_UNTIL
from jobstore.db import transaction
from jobstore.dispatches import DispatchPlan, begin_dispatches
from jobstore.models import OPEN_JOB_STATUSES, Attempt, AttemptStatus, Job, JobKind, JobStatus
from routing.catalog import Catalog, get_catalog
from routing.embeddings import route_embedding
from routing.filters import BUDGET_FILTER
from routing.router import route
from routing.spill import PINNED_STRATEGIES, choose
from routing.types import NoRoute, RoutingError, RoutingRequest
from workers import capacity
from workers.dispatch_context import DispatchContext, Held
from workers.health import next_rotation
from workers.next_step import NextStep, Nothing, SendAttempt, SendDispatch
from workers.policy import LASTING_KINDS, RetryPolicy
from workers.providers.base import unavailable_deployments
from workers.queues import Priority, priority_for

log = logging.getLogger(__name__)

_rng = random.Random()
BUDGET_BUSY_RETRY_S = 1.0


def failed_over_deployments(attempts: Iterable[Attempt]) -> frozenset[str]:
    """Deployments a job already gave up on (their attempts ended in a failover)."""
    return frozenset(
        a.deployment for a in attempts if a.error_type and a.error_type.startswith(FAILOVER_PREFIX)
    )


def lastingly_failed_deployments(attempts: Iterable[Attempt]) -> frozenset[str]:
    """Of those, the ones whose failure a second round of routing cannot cure."""
    return frozenset(
        a.deployment
        for a in attempts
        if a.error_type
        and a.error_type.startswith(FAILOVER_PREFIX)
        and kind_of(a.error_type) in LASTING_KINDS
    )


def last_error(attempts: Iterable[Attempt]) -> str:
    """The latest failed attempt's error, to say why nothing is left to try."""
    failed = [a for a in attempts if a.error_type]
    if not failed:
        return ""
    latest = max(failed, key=lambda a: a.number)
    kind = (latest.error_type or "").removeprefix(FAILOVER_PREFIX)
    return f" (last error on {latest.deployment}: {kind}: {latest.error_message})"


def priority_of(job: Job, *, attempts_before: int | None = None) -> Priority:
    """A job tried before goes ahead of new ones; a batch's jobs give way to jobs sent one by
    one (see `workers.queues.Priority`). `attempts_before` defaults to the job's count."""
    tried = job.attempt_count if attempts_before is None else attempts_before
    return priority_for(tried_before=tried > 0, in_batch=job.batch_id is not None)


@dataclass(frozen=True)
class Ended:
    error: JobError
    message: str


@dataclass(frozen=True)
class NotYet:
    wait_s: float


def gate(
    *,
    deadline: datetime | None,
    not_before: datetime | None,
    attempt_count: int,
    now: datetime,
    policy: RetryPolicy,
) -> Ended | NotYet | None:
    """Whether a queued job may be routed now: None if so; else it has ended or must wait."""
    if deadline is not None and deadline <= now:
        return Ended(
            JobError.DEADLINE_EXCEEDED, "the job's deadline passed before any deployment could serve it"
        )
    if not_before is not None and not_before > now:
        return NotYet((not_before - now).total_seconds())
    if attempt_count >= policy.max_attempts_per_job:
        return Ended(JobError.ATTEMPTS_EXHAUSTED, f"gave up after {attempt_count} attempts")
    return None


def cooldown_wake(
    retry_at: float | None, *, deadline: datetime | None, now: datetime, max_wait_s: float
) -> datetime | Ended:
    """Every candidate is cooling down: when to look again (the earliest reopening, or in 5 s
    when none is known), or the end of the job when that is past its deadline or the wait cap."""
    limit = now + timedelta(seconds=max_wait_s)
    if deadline is not None:
        limit = min(limit, deadline)
    wake = datetime.fromtimestamp(retry_at, UTC) if retry_at else now + timedelta(seconds=5)
    if wake > limit:
        return Ended(
            JobError.ALL_DEPLOYMENTS_DOWN, "every eligible deployment is cooling down past the job's deadline"
        )
    return wake


def dispatch_jobs(job_ids: Sequence[str], *, catalog: Catalog | None = None) -> list[NextStep]:
    """Route these jobs in one transaction (health, capacity and budgets read once for all)."""
    catalog = catalog or get_catalog()
    now = utcnow()
    with transaction() as session:
        jobs = session.scalars(
            select(Job).where(Job.id.in_(list(job_ids))).options(lazyload(Job.attempts))
        ).all()
        context = DispatchContext(session, catalog, now)
        revoked = context.revoked(jobs)
        decided: list[NextStep | Planned] = []
        for job in jobs:
            if job.owner_id in revoked and job.status in OPEN_JOB_STATUSES:
                decided.append(_cancel_revoked(session, job, now))
            else:
                decided.append(_dispatch_loaded(session, job, context))
        # The routed jobs are dispatched together: one UPDATE and one INSERT for all of them.
        begun = iter(begin_planned(session, [d for d in decided if isinstance(d, Planned)], context))
        steps = [next(begun) if isinstance(d, Planned) else d for d in decided]
    capacity.store().queue(context.sent_counts)
    return steps


def dispatch_job(job_id: str, *, catalog: Catalog | None = None) -> NextStep:
    steps = dispatch_jobs([job_id], catalog=catalog)
    return steps[0] if steps else Nothing(f"job {job_id} not found")


def _dispatch_loaded(session: Session, job: Job, context: DispatchContext) -> NextStep | Planned:
    if job.status == JobStatus.DISPATCHED:
        pending = transitions.latest_attempt(session, job.id)
        if pending is not None and pending.status == AttemptStatus.PENDING:
            return SendAttempt(
                pending.id,
                pending.provider,
                priority=priority_of(job, attempts_before=pending.number - 1),
                deployment=pending.deployment,
            )
        return Nothing("already dispatched")
    if job.status != JobStatus.QUEUED:
        return Nothing(f"job is {job.status}")
    return plan_queued_job(session, job, context)


def _cancel_revoked(session: Session, job: Job, now: datetime) -> Nothing:
    """A revoked key's job is cancelled, never called, and says so."""
    transitions.cancel_for_revoked_key(session, job.id, now)
    return Nothing("the key was revoked", ended_batch=job.batch_id, ended=True, job_id=job.id)


def route_queued_job(
    session: Session,
    job: Job,
    *,
    catalog: Catalog,
    now: datetime,
    context: DispatchContext | None = None,
) -> NextStep:
    """Route a job that is queued in `session`'s transaction and create its next attempt
    there, with its budget reservation. A provider worker's writer calls it for a failover,
    in the transaction that recorded the failed attempt (one commit, not three); the
    dispatcher plans its jobs (`plan_queued_job`) and begins them together (`begin_planned`)."""
    context = context or DispatchContext(session, catalog, now)
    step = plan_queued_job(session, job, context)
    return begin_planned(session, [step], context)[0] if isinstance(step, Planned) else step


@dataclass(frozen=True)
class Planned:
    """A queued job routed, its budget reserved and its send counted, its dispatch not yet
    written (`begin_planned` writes it)."""

    plan: DispatchPlan
    owner_id: str
    batch_id: str | None
    priority: Priority


def begin_planned(session: Session, planned: list[Planned], context: DispatchContext) -> list[NextStep]:
    """Write the planned dispatches (queued -> dispatched, a pending attempt each) and say what
    to send, in order; a job someone else dispatched meanwhile gives its reservation back."""
    made = begin_dispatches(session, [p.plan for p in planned])
    steps: list[NextStep] = []
    for p in planned:
        attempt = made.get(p.plan.job_id)
        if attempt is None:
            ledger.release(session, p.owner_id, p.batch_id, p.plan.reserved_usd)
            context.unsent(p.plan.deployment)
            steps.append(Nothing("raced: job no longer queued"))
        else:
            steps.append(
                SendAttempt(attempt.id, attempt.provider, priority=p.priority, deployment=attempt.deployment)
            )
    return steps


def plan_queued_job(session: Session, job: Job, context: DispatchContext) -> NextStep | Planned:
    """Route a queued job: the step that ends or defers it, or its Planned dispatch."""
    now, catalog = context.now, context.catalog
    held = gate(
        deadline=aware(job.deadline_at) if job.deadline_at else None,
        not_before=aware(job.not_before) if job.not_before else None,
        attempt_count=job.attempt_count,
        now=now,
        policy=RetryPolicy.from_settings(get_settings()),
    )
    if isinstance(held, Ended):
        return _fail(session, job, held, now)
    if isinstance(held, NotYet):
        return SendDispatch(job.id, held.wait_s, priority=priority_of(job))
    attempts = job.attempts if job.attempt_count else []  # a new job: do not load its (empty) attempts
    headroom = context.budget_headroom(job.owner_id, job.batch_id)
    max_tokens: int | None = None
    try:
        if job.kind == JobKind.EMBEDDING:  # issue 14: only the deployments of the one model it names
            decision = route_embedding(
                job.model_requested or "",
                catalog,
                context.health,
                now=now.timestamp(),
                rng=_rng,
                raw_tokens=job.request_tokens or 0,
                exclude=failed_over_deployments(attempts),
                lasting_exclude=lastingly_failed_deployments(attempts),
                unavailable=unavailable_deployments(),
            )
        else:
            request = RoutingRequest.for_job(
                job,
                budget_remaining_usd=headroom,
                exclude=failed_over_deployments(attempts),
                lasting=lastingly_failed_deployments(attempts),
                unavailable=unavailable_deployments(),
            )
            max_tokens = request.request.max_tokens
            rotation = next_rotation("round_robin") if job.strategy == "round_robin" else 0
            decision = route(
                request, catalog, context.health, now=now.timestamp(), rng=_rng, rotation=rotation
            )
    except NoRoute as exc:
        if headroom is not None and {e.filter for e in exc.exclusions} == {BUDGET_FILTER}:
            return _fail(session, job, Ended(JobError.BUDGET_EXCEEDED, f"{exc}"), now)
        return _fail(session, job, Ended(JobError.NO_ROUTE, f"{exc}{last_error(attempts)}"), now)
    except RoutingError as exc:
        return _fail(session, job, Ended(JobError.ROUTING_ERROR, str(exc)), now)
    if not decision.candidates:
        wake = cooldown_wake(
            decision.retry_at,
            deadline=aware(job.deadline_at) if job.deadline_at else None,
            now=now,
            max_wait_s=get_settings().max_wait_for_cooldown_s,
        )
        if isinstance(wake, Ended):
            return _fail(session, job, wake, now)
        transitions.requeue(session, job.id, not_before=wake)
        return SendDispatch(job.id, max(0.05, (wake - now).total_seconds()), priority=priority_of(job))
    may_spill = len(decision.candidates) > 1 and decision.strategy not in PINNED_STRATEGIES
    choice = choose(
        decision.candidates,
        context.waits(decision.candidates) if may_spill else {},
        strategy=decision.strategy,
        spill_s=get_settings().capacity_spill_s,
    )
    chosen = decision.candidates[choice.index]
    reservation = context.reserve(job, chosen.deployment, chosen.input_tokens, max_tokens)
    if reservation is None:
        why = (
            f"the budget left cannot cover a call to {chosen.deployment.name} "
            f"(its most it could cost: input and max output at list price)"
        )
        return _fail(session, job, Ended(JobError.BUDGET_EXCEEDED, why), now)
    if isinstance(reservation, Held):
        return _hold(session, job, now)
    explanation = decision.explanation()
    if choice.note:
        explanation["capacity"] = choice.note
    if reservation.amount:
        explanation["reserved_usd"] = str(reservation.amount)
    # Counted now, not once written: the next job of this message weighs it (`context.waits`).
    context.sent(chosen.deployment.name)
    plan = DispatchPlan(
        job.id,
        provider=chosen.deployment.provider,
        model=chosen.deployment.model.id,
        deployment=chosen.deployment.name,
        explanation=explanation,
        reserved_usd=reservation.amount,
        max_tokens=reservation.max_tokens,
    )
    return Planned(plan, job.owner_id, job.batch_id, priority_of(job))


def _hold(session: Session, job: Job, now: datetime) -> NextStep:
    """The budget is full of calls in flight: a batch's job goes back to the feeder, any other
    job is looked at again in a second."""
    if job.batch_id is not None:
        transitions.requeue(session, job.id, not_before=HELD_UNTIL)
        return Nothing("waiting for the budget's calls in flight to settle")
    wake = now + timedelta(seconds=BUDGET_BUSY_RETRY_S)
    transitions.requeue(session, job.id, not_before=wake)
    return SendDispatch(job.id, BUDGET_BUSY_RETRY_S, priority=priority_of(job))


def _fail(session: Session, job: Job, ended: Ended, now: datetime) -> Nothing:
    """The job ends here, failed; a batch it belongs to has moved on."""
    transitions.fail_job(session, job.id, error_type=ended.error, message=ended.message, now=now)
    return Nothing(ended.error.value, ended_batch=job.batch_id, ended=True, job_id=job.id)
