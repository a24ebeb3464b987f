"""The dispatcher: route a queued job to a deployment and hand it to that provider's queue.

`dispatch_job` is a plain function (the Celery task in `tasks.py` only sends what it
returns). It is safe to run twice for one job: the queued -> dispatched transition is
conditional, and a job found dispatched with its attempt still pending (a crash between
commit and send) has that attempt sent again.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from core.clock import aware
from core.settings import get_settings
from core.types import ChatRequest
from jobstore import transitions
from jobstore.db import transaction
from jobstore.jobs import owner_spend
from jobstore.models import ApiKey, AttemptStatus, Job, JobStatus
from routing.catalog import Catalog, get_catalog
from routing.router import NoRoute, RoutingError, RoutingRequest, deployments_considered, route
from workers.health import health_snapshot, next_rotation
from workers.next_step import NextStep, Nothing, SendAttempt, SendDispatch
from workers.queues import Priority, priority_for

log = logging.getLogger(__name__)

_rng = random.Random()
MAX_ATTEMPTS_PER_JOB = 25
BUDGET_CACHE_S = 5.0
_budgets: dict[str, tuple[float, Decimal | None]] = {}


def routing_request_for(job: Job, *, exclude: frozenset[str], budget: Decimal | None) -> RoutingRequest:
    return RoutingRequest.from_stored(
        ChatRequest.model_validate(job.request),
        model=job.model_requested,
        strategy=job.strategy,
        options=job.routing,
        stream=bool(job.stream),
        budget_remaining_usd=budget,
        exclude=exclude,
        input_tokens=job.request_tokens,
    )


def remaining_budget(session: Session, owner_id: str) -> Decimal | None:
    """What the owner may still spend, or None without a budget. Whether a key has a budget
    is cached briefly (it is one query per job otherwise, and budgets change rarely)."""
    now = time.monotonic()
    cached = _budgets.get(owner_id)
    if cached is None or now - cached[0] > BUDGET_CACHE_S:
        cached = (now, session.scalar(select(ApiKey.budget_usd).where(ApiKey.id == owner_id)))
        _budgets[owner_id] = cached
    limit = cached[1]
    return None if limit is None else limit - owner_spend(session, owner_id)


def failed_over_deployments(job: Job) -> frozenset[str]:
    """Deployments this job already gave up on (their attempts ended in a failover)."""
    if job.attempt_count == 0:  # a new job: do not load its (empty) attempts
        return frozenset()
    return frozenset(
        a.deployment for a in job.attempts if a.error_type and a.error_type.startswith("failover:")
    )


# Failovers a second round cannot cure: a missing or rejected key and a too-small window stay so.
LASTING_FAILOVERS = frozenset({"failover:missing_credentials", "failover:auth", "failover:context_too_long"})


def lastingly_failed_deployments(job: Job) -> frozenset[str]:
    return frozenset(a.deployment for a in job.attempts if a.error_type in LASTING_FAILOVERS)


def last_error(job: Job) -> str:
    """The latest failed attempt's error, to say why nothing is left to try."""
    failed = [a for a in job.attempts if a.error_type]
    if not failed:
        return ""
    latest = max(failed, key=lambda a: a.number)
    kind = (latest.error_type or "").removeprefix("failover:")
    return f" (last error on {latest.deployment}: {kind}: {latest.error_message})"


def priority_of(job: Job, *, attempts_before: int | None = None) -> Priority:
    """A job tried before goes ahead of new ones; a batch's jobs give way to jobs sent one by
    one (see `workers.queues.Priority`). `attempts_before` defaults to the job's count."""
    tried = job.attempt_count if attempts_before is None else attempts_before
    return priority_for(tried_before=tried > 0, in_batch=job.batch_id is not None)


def dispatch_job(job_id: str, *, catalog: Catalog | None = None, now: datetime | None = None) -> NextStep:
    catalog = catalog or get_catalog()
    now = now or datetime.now(UTC)
    with transaction() as session:
        job = session.get(Job, job_id, options=[lazyload(Job.attempts)])
        if job is None:
            return Nothing(f"job {job_id} not found")
        if job.status == JobStatus.DISPATCHED:
            pending = transitions.latest_attempt(session, job_id)
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
        return route_queued_job(session, job, catalog=catalog, now=now)


def route_queued_job(session: Session, job: Job, *, catalog: Catalog, now: datetime) -> NextStep:
    """Route a job that is queued in `session`'s transaction and create its next attempt
    there. The dispatcher calls it for new jobs; a provider worker calls it for a failover,
    in the same transaction that recorded the failed attempt (one commit, not three)."""
    if job.deadline_at is not None and aware(job.deadline_at) <= now:
        return _fail(
            session,
            job,
            "deadline_exceeded",
            "the job's deadline passed before any deployment could serve it",
            now,
        )
    if job.not_before is not None and aware(job.not_before) > now:
        wait = (aware(job.not_before) - now).total_seconds()
        return SendDispatch(job.id, wait, priority=priority_of(job))
    if job.attempt_count >= MAX_ATTEMPTS_PER_JOB:
        return _fail(session, job, "attempts_exhausted", f"gave up after {job.attempt_count} attempts", now)
    budget = remaining_budget(session, job.owner_id)
    rotation = next_rotation("round_robin") if job.strategy == "round_robin" else 0
    tried = failed_over_deployments(job)
    try:
        request = routing_request_for(job, exclude=tried, budget=budget)
        names = deployments_considered(request, catalog)
        snapshot = health_snapshot(names, now.timestamp())
        try:
            decision = route(request, catalog, snapshot, now=now.timestamp(), rng=_rng, rotation=rotation)
        except NoRoute:
            lasting = lastingly_failed_deployments(job)
            if not tried - lasting:
                raise
            # Every candidate has failed over once: go round again, now gated only by
            # the breakers (a cooled-down deployment gets another chance).
            decision = route(
                replace(request, exclude=lasting),
                catalog,
                snapshot,
                now=now.timestamp(),
                rng=_rng,
                rotation=rotation,
            )
    except NoRoute as exc:
        return _fail(session, job, "no_route", f"{exc}{last_error(job)}", now)
    except RoutingError as exc:
        return _fail(session, job, "routing_error", str(exc), now)
    if not decision.candidates:
        return _wait_for_cooldown(session, job, decision.retry_at, now)
    chosen = decision.candidates[0].deployment
    priority = priority_of(job)  # before begin_dispatch counts the new attempt
    attempt = transitions.begin_dispatch(
        session,
        job.id,
        provider=chosen.provider,
        model=chosen.model.id,
        deployment=chosen.name,
        explanation=decision.explanation(),
    )
    if attempt is None:
        return Nothing("raced: job no longer queued")
    return SendAttempt(attempt.id, attempt.provider, priority=priority, deployment=attempt.deployment)


def _fail(session: Session, job: Job, error_type: str, message: str, now: datetime) -> Nothing:
    """The job ends here, failed; a batch it belongs to has moved on."""
    transitions.fail_job(session, job.id, error_type=error_type, message=message, now=now)
    return Nothing(error_type, ended_batch=job.batch_id)


def _wait_for_cooldown(session: Session, job: Job, retry_at: float | None, now: datetime) -> NextStep:
    """Every candidate is cooling down: wait for the earliest to reopen, up to the deadline."""
    limit = now + timedelta(seconds=get_settings().max_wait_for_cooldown_s)
    if job.deadline_at is not None:
        limit = min(limit, aware(job.deadline_at))
    wake = datetime.fromtimestamp(retry_at, UTC) if retry_at else now + timedelta(seconds=5)
    if wake > limit:
        return _fail(
            session,
            job,
            "all_deployments_down",
            "every eligible deployment is cooling down past the job's deadline",
            now,
        )
    transitions.requeue(session, job.id, not_before=wake)
    return SendDispatch(job.id, max(0.05, (wake - now).total_seconds()), priority=priority_of(job))
