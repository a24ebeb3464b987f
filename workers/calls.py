"""One provider call for one attempt: claim it, call, classify, record, decide what next.

`run_attempt` is a plain function; the Celery task in `tasks.py` sends what it returns.
The attempt is claimed with a lease a little longer than the provider timeout, so a
redelivered message for a call still in flight waits instead of calling twice, and one
for a worker that died (SIGKILL) takes the call over once the lease has run out.
What each failure leads to is `workers/policy.py`'s decision, not this module's.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FuturesTimeout
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from core.clock import aware
from core.errors import ErrorKind, failover_type
from core.settings import Settings, get_settings
from core.types import ChatRequest, ChatResponse
from jobstore import ledger, transitions
from jobstore.db import transaction
from jobstore.models import Attempt, AttemptStatus, Job, JobStatus
from routing.catalog import Catalog, Deployment, get_catalog
from routing.costs import settle_cost
from workers import health, metrics, streams
from workers.call_loop import get_call_loop
from workers.dispatch import priority_of, route_queued_job
from workers.next_step import NextStep, Nothing, SendAttempt, SendDispatch
from workers.policy import Action, Fail, Failover, RetryPolicy, after_failure
from workers.providers.errors import ProviderError, Transient

log = logging.getLogger(__name__)
_rng = random.Random()
BREAKER_OPEN = "circuit breaker open"


def call_timeout(settings: Settings) -> float:
    """The longest a task waits for its call: the SDK's own timeout plus room to build a client."""
    return settings.provider_timeout_s + 5


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds: past the call timeout, so a live call is never taken over."""
    return call_timeout(settings) + 5


def consecutive_failures_on(attempts: Iterable[Attempt], deployment: str) -> int:
    """Failed attempts on this deployment since the job last moved to it."""
    count = 0
    for attempt in sorted(attempts, key=lambda a: a.number, reverse=True):
        if attempt.deployment != deployment:
            break
        if attempt.status == AttemptStatus.FAILED:
            count += 1
    return count


def run_attempt(
    attempt_id: str,
    *,
    deployment_hint: str | None = None,
    catalog: Catalog | None = None,
    settings: Settings | None = None,
) -> NextStep:
    """`deployment_hint`, the attempt's deployment as its message names it, lets the breaker
    be asked before the claim: an attempt queued for a deployment whose breaker has since
    opened fails over in one transaction instead of two (after a provider goes down, every
    attempt already queued for it comes this way)."""
    catalog = catalog or get_catalog()
    settings = settings or get_settings()
    token = uuid.uuid4().hex
    now = datetime.now(UTC)
    admitted = _preview(deployment_hint, now.timestamp()) if deployment_hint else None
    if admitted is False:
        refused = _refuse_before_claim(attempt_id, catalog, now)
        if refused is not None:
            metrics.failover(deployment_hint or "")  # metrics (console)
            return refused
    lease = now + timedelta(seconds=lease_seconds(settings))
    with transaction() as session:
        # The common case first: claim, reading what the call needs in the same statements.
        attempt = transitions.claim_for_call(session, attempt_id, token, now, lease)
        if attempt is None:
            return _not_claimed(session, attempt_id, now)
    request = ChatRequest.model_validate(attempt.request)
    stream = attempt.stream
    job_id = attempt.job_id
    deployment = catalog.deployment(attempt.deployment)
    if deployment is None:
        return _finish_failure(
            attempt,
            token,
            ProviderError(f"deployment {attempt.deployment!r} left the catalog"),
            Action.FAILOVER,
            None,
            settings,
            catalog,
        )
    if not (admitted and deployment.name == deployment_hint) and not health.admit(
        deployment.name, time.time()
    ):
        return _finish_failure(
            attempt, token, Transient(BREAKER_OPEN), Action.FAILOVER, None, settings, catalog
        )
    started = time.perf_counter()
    try:
        response = call_deployment(deployment, request, job_id if stream else None, settings)
    except FuturesTimeout:
        exc = Transient(f"no answer within {call_timeout(settings):.0f} s")
        latency = (time.perf_counter() - started) * 1000
        return _after_failed_call(attempt, token, deployment, exc, latency, settings, catalog)
    except ProviderError as exc:
        latency = (time.perf_counter() - started) * 1000
        return _after_failed_call(attempt, token, deployment, exc, latency, settings, catalog)
    except Exception as exc:  # an adapter bug must not strand the job: retry, then fail over
        log.exception("unexpected error calling %s", deployment.name)
        unexpected = Transient(f"unexpected {type(exc).__name__} in the {deployment.provider} adapter")
        return _finish_failure(attempt, token, unexpected, Action.RETRY, None, settings, catalog)
    latency = (time.perf_counter() - started) * 1000
    health.record_success(deployment.name, time.time(), latency)
    metrics.provider_call(deployment, latency, "success", response.rate_limit_headers)  # metrics (console)
    outcome = transitions.CallOutcome(
        text=response.text,
        tool_calls=[c.model_dump(mode="json") for c in response.tool_calls] or None,
        finish_reason=response.finish_reason.value,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cached_input_tokens=response.usage.cached_input_tokens,
        reasoning_tokens=response.usage.reasoning_tokens,
        cost_usd=settle_cost(deployment.model, response.usage),
        latency_ms=round(latency, 2),
        provider_request_id=response.provider_request_id,
        rate_limit_headers=response.rate_limit_headers,
    )
    with transaction() as session:
        now = datetime.now(UTC)
        written = transitions.record_success(session, attempt, token, outcome, now)
        if written:  # the cost counts against the key's (and batch's) budget in this transaction
            ledger.settle(
                session,
                attempt.owner_id,
                attempt.batch_id,
                reserved=Decimal(0),
                cost=outcome.cost_usd,
                now=now,
            )
    if stream:
        streams.publish(job_id, "done", "succeeded")
    if not written:
        return Nothing("lost the claim; result discarded")
    return Nothing("succeeded", ended_batch=attempt.batch_id)


def call_deployment(
    deployment: Deployment, request: ChatRequest, stream_job: str | None, settings: Settings
) -> ChatResponse:
    """One call through the deployment's adapter on the worker's call loop (streamed to the
    job's stream when `stream_job` is set); raises the adapter's ProviderError."""
    loop = get_call_loop()

    async def go() -> ChatResponse:
        adapter = await loop.adapter(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        )
        if stream_job is None:
            return await adapter.complete(request)
        return await adapter.complete(request, on_text=streams.delta_sink(stream_job))

    return loop.run(go(), timeout=call_timeout(settings))


def _after_failed_call(
    attempt: transitions.ClaimedCall,
    token: str,
    deployment: Deployment,
    error: ProviderError,
    latency: float,
    settings: Settings,
    catalog: Catalog,
) -> NextStep:
    """Count the failure against the deployment, then finish the attempt as the policy says."""
    after = health.record_failure(deployment.name, time.time(), error)
    metrics.provider_call(deployment, latency, error.kind.value)  # metrics (console)
    breaker_open = after is not None and after.breaker == "open"
    return _finish_failure(attempt, token, error, None, latency, settings, catalog, breaker_open=breaker_open)


def _finish_failure(
    attempt: transitions.ClaimedCall,
    token: str,
    error: ProviderError,
    action: Action | None,
    latency: float | None,
    settings: Settings,
    catalog: Catalog,
    *,
    breaker_open: bool = False,
) -> NextStep:
    """Record the failed attempt and do what `policy.after_failure` decides: retry the same
    deployment, fail over (routed here, in this transaction), or fail the job. `action`
    overrides the error kind's own (a refusing breaker, an adapter bug)."""
    now = datetime.now(UTC)
    with transaction() as session:
        job = session.get(Job, attempt.job_id)
        assert job is not None
        decision = after_failure(
            error.kind,
            error.message,
            failures_here=consecutive_failures_on(job.attempts, attempt.deployment) + 1,
            breaker_open=breaker_open,
            retry_after=error.retry_after,
            deadline=aware(job.deadline_at) if job.deadline_at else None,
            now=now,
            policy=RetryPolicy.from_settings(settings),
            rng=_rng,
            action=action,
        )
        metrics.after_failure(attempt.provider, attempt.deployment, decision)  # metrics (console)
        if not transitions.record_failure(
            session,
            attempt,
            token,
            error_type=failover_type(error.kind) if isinstance(decision, Failover) else error.kind.value,
            message=error.message,
            retry_after_s=error.retry_after,
            latency_ms=latency,
            now=now,
        ):
            return Nothing("lost the claim")
        log.info("attempt %s on %s: %s -> %s", attempt.id, attempt.deployment, error.kind, decision)
        if isinstance(decision, Fail):
            transitions.fail_job(
                session, job.id, error_type=decision.error, message=decision.message, now=now
            )
            if job.stream:
                streams.publish(job.id, "done", "failed")
            return Nothing(decision.error.value, ended_batch=attempt.batch_id)
        if isinstance(decision, Failover):
            if not transitions.requeue(session, job.id):
                return Nothing("job closed")
            return _route_on(session, job, catalog, now)
        retry = transitions.schedule_retry(session, attempt, now + timedelta(seconds=decision.countdown))
        if retry is None:
            return Nothing("job closed")
        return SendAttempt(
            retry.id,
            retry.provider,
            decision.countdown,
            priority=priority_of(job),
            deployment=retry.deployment,
        )


def _route_on(session: Session, job: Job, catalog: Catalog, now: datetime) -> NextStep:
    """Route a failed-over job now, in the transaction that recorded the failure: one commit
    and no queue hop. Routing reads Redis; if that (or anything in it) fails, only the
    routing is undone (a savepoint) and the job goes to the dispatcher, the failure kept."""
    try:
        with session.begin_nested():
            return route_queued_job(session, job, catalog=catalog, now=now)
    except Exception:
        log.warning("routing the failover of job %s here failed; the dispatcher will", job.id, exc_info=True)
        return SendDispatch(job.id, priority=priority_of(job))


def _preview(deployment: str, now: float) -> bool | None:
    """The breaker's answer before the claim, or None (ask after it) if Redis cannot say."""
    try:
        return health.preview_admission(deployment, now)
    except Exception:
        log.warning("could not read the breaker of %s before the claim", deployment, exc_info=True)
        return None


def _refuse_before_claim(attempt_id: str, catalog: Catalog, now: datetime) -> NextStep | None:
    """Fail a still-pending attempt over without claiming it; None if it was not pending
    (the claim path then decides what it is)."""
    with transaction() as session:
        job_id = transitions.refuse_pending(
            session, attempt_id, error_type=failover_type(ErrorKind.TRANSIENT), message=BREAKER_OPEN, now=now
        )
        if job_id is None:
            return None
        job = session.get(Job, job_id)
        if job is None or not transitions.requeue(session, job_id):
            return Nothing("job closed")
        return _route_on(session, job, catalog, now)


def _not_claimed(session: Session, attempt_id: str, now: datetime) -> NextStep:
    """Why the claim failed, and what to send: nothing, a repair, or a later look."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        return Nothing(f"attempt {attempt_id} not found")
    job = session.get(Job, attempt.job_id)
    assert job is not None
    if job.status in (JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED):
        return Nothing(f"job is {job.status}")
    if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELLED):
        return _repair(job)
    held = attempt.lease_until
    wait = (aware(held) - now).total_seconds() + 1 if held else 5.0
    return SendAttempt(
        attempt_id, attempt.provider, max(1.0, wait), priority=priority_of(job), deployment=attempt.deployment
    )


def _repair(job: Job) -> NextStep:
    """A redelivered message for a finished attempt: resend whatever its commit promised
    (a crash between commit and send would otherwise strand the job)."""
    if job.status == JobStatus.QUEUED:
        return SendDispatch(job.id, priority=priority_of(job))
    latest = max(job.attempts, key=lambda a: a.number, default=None)
    if latest is not None and latest.status == AttemptStatus.PENDING:
        wait = (aware(latest.not_before) - datetime.now(UTC)).total_seconds() if latest.not_before else 0.0
        return SendAttempt(
            latest.id,
            latest.provider,
            max(0.0, wait),
            priority=priority_of(job),
            deployment=latest.deployment,
        )
    return Nothing("attempt already finished")
