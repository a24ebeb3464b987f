"""A provider batch's lines written back to their jobs, each exactly once.

A line is a job's attempt claimed by the provider batch (its id is the claim token), so the
online path's own writes apply: an answered line goes through `calls.write_successes` (only
attempts still running under the token are written, and each line's cost, at batch prices,
replaces its reservation in the ledger), whoever reads the results and however often. A
line that came back unanswered (the provider failed it, or it never ran: the batch expired,
was cancelled or refused) meets its `fate`:

    the job was cancelled, or its batch is being cancelled -> the line is cancelled
    the provider refused the request itself (invalid, content filtered) -> the job fails
    the deadline has passed -> the job fails (deadline_exceeded, naming the provider batch)
    otherwise -> back online: the attempt failed, the reservation released (the
                 dispatcher reserves again at list price), the job re-queued to the
                 dispatcher ahead of new batch work

each in one transaction that first holds the llmqueue batch's row shared, so a cancel
committed before it is seen, and one that comes after sees the jobs this re-queued.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.orm import Session

from core.errors import BatchLineError, ErrorKind, JobError
from jobstore import claims, ledger, transitions
from jobstore import provider_batches as store
from jobstore.batch_models import BatchStatus, ProviderBatch
from jobstore.db import transaction
from jobstore.provider_batches import HeldLine
from routing.catalog import ModelSpec
from routing.costs import settle_batch_cost
from workers.batch_progress import after_step
from workers.calls import Succeeded, write_successes
from workers.messages import send_steps
from workers.next_step import NextStep, Nothing, SendDispatch
from workers.outcomes import sanitized
from workers.policy import FOR_KIND, Action
from workers.providers.batch_base import (
    BatchLineResult,
    LineOutcome,
    NotRunReason,
    ProviderBatchState,
    ProviderBatchStatus,
)
from workers.queues import Priority

log = logging.getLogger(__name__)
CANCELLING = (BatchStatus.CANCELLING.value, BatchStatus.CANCELLED.value)


class Fate(StrEnum):
    ONLINE = "online"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Unanswered:
    """Why a line came back without an answer."""

    error_type: str  # the provider's ErrorKind for the line, or a BatchLineError
    message: str
    kind: ErrorKind | None = None  # the provider's own error for this line, when it gave one


def fate(
    why: Unanswered, *, job_open: bool, cancelling: bool, now: datetime, deadline: datetime | None
) -> Fate:
    """What becomes of an unanswered line (see the module docstring)."""
    if not job_open or cancelling:
        return Fate.CANCELLED
    if why.kind is not None and FOR_KIND[why.kind].action is Action.FAIL:
        return Fate.FAILED
    if deadline is not None and now >= deadline:
        return Fate.FAILED
    return Fate.ONLINE


NOT_RUN = {
    NotRunReason.EXPIRED: Unanswered(
        BatchLineError.EXPIRED.value, "the provider's batch window closed before the line ran"
    ),
    NotRunReason.CANCELLED: Unanswered(
        BatchLineError.CANCELLED.value, "the provider batch was stopped before the line ran"
    ),
}


def unanswered_of(result: BatchLineResult) -> Unanswered:
    """An unanswered result line, in the taxonomy."""
    if result.outcome is LineOutcome.FAILED and result.error is not None:
        error = result.error
        return Unanswered(error.kind.value, f"the provider failed the line: {error.message}", error.kind)
    return NOT_RUN[result.not_run or NotRunReason.EXPIRED]


def unreported(status: ProviderBatchStatus) -> Unanswered:
    """Why a line the ended batch never reported did not run."""
    if status.state is ProviderBatchState.FAILED:
        error = status.error
        why = f"{error.kind.value}: {error.message}" if error is not None else "no reason given"
        return Unanswered(BatchLineError.BATCH_FAILED.value, f"the provider refused the batch ({why})")
    if status.state is ProviderBatchState.EXPIRED:
        return NOT_RUN[NotRunReason.EXPIRED]
    if status.state is ProviderBatchState.CANCELLED:
        return NOT_RUN[NotRunReason.CANCELLED]
    return Unanswered(BatchLineError.NOT_REPORTED.value, "the provider batch ended without a result for it")


# ---------------------------------------------------------------- writing


def write_results(
    pb: ProviderBatch, results: Sequence[BatchLineResult], *, model: ModelSpec, emulated: bool, now: datetime
) -> int:
    """Write these result lines to their jobs (those still held by the provider batch); returns
    how many were written. Side effects (messages, batch checks) follow the commits."""
    with transaction() as session:
        held = {
            line.claim.id: line for line in store.held_lines(session, pb.id, [r.custom_id for r in results])
        }
    latency_ms = round((now - pb.submitted_at).total_seconds() * 1000, 2) if pb.submitted_at else 0.0
    answered = [
        Succeeded(
            held[r.custom_id].claim,
            sanitized(
                r.response,
                cost=settle_batch_cost(model, r.response.usage),
                latency_ms=latency_ms,
                emulated=emulated,
            ),
        )
        for r in results
        if r.outcome is LineOutcome.SUCCEEDED and r.response is not None and r.custom_id in held
    ]
    unanswered = [
        (held[r.custom_id], unanswered_of(r))
        for r in results
        if not (r.outcome is LineOutcome.SUCCEEDED and r.response is not None) and r.custom_id in held
    ]
    steps: list[NextStep] = []
    if answered:
        written = write_successes(answered, now)
        steps += written.steps
    steps += send_back(pb, unanswered, now)
    _after(steps)
    return len(answered) + len(unanswered)


def send_back(
    pb: ProviderBatch, lines: Sequence[tuple[HeldLine, Unanswered]], now: datetime
) -> list[NextStep]:
    """Each unanswered line to its fate, in one transaction; returns what to send after it."""
    if not lines:
        return []
    steps: list[NextStep] = []
    released: dict[tuple[str, str | None], Decimal] = defaultdict(Decimal)
    with transaction() as session:
        cancelling = store.batch_status(session, pb.batch_id, lock=True) in CANCELLING
        held = claims.still_held(session, ((line.claim.id, line.claim.token) for line, _ in lines))
        for line, why in lines:
            claim = line.claim
            if claim.id not in held:
                continue
            released[(claim.owner_id, claim.batch_id)] += claim.reserved_usd
            deadline = claim.deadline_at or pb.deadline_at
            chosen = fate(why, job_open=line.job_open, cancelling=cancelling, now=now, deadline=deadline)
            steps.append(_apply(session, pb, line, why, chosen, now))
        for (owner_id, batch_id), amount in released.items():
            ledger.release(session, owner_id, batch_id, amount)
    return steps


def _apply(
    session: Session, pb: ProviderBatch, line: HeldLine, why: Unanswered, chosen: Fate, now: datetime
) -> NextStep:
    claim = line.claim
    if chosen is Fate.CANCELLED:
        store.close_line(session, claim.id, claim.token, why.error_type, why.message, now)
        cancelled = transitions.cancel_job(session, claim.job_id, now)
        return Nothing("line cancelled", ended_batch=claim.batch_id, ended=cancelled)
    transitions.record_failure(
        session,
        claim,
        claim.token,
        error_type=why.error_type,
        message=why.message,
        retry_after_s=None,
        latency_ms=None,
        now=now,
    )
    if chosen is Fate.ONLINE:
        record = {
            "mode": "online",
            "reason": f"online: sent back from provider batch {pb.id} ({why.message})",
            "provider_batch": pb.id,
            "deployment": pb.deployment,
        }
        store.leave_provider_batch(session, claim.job_id, {**line.routing, "economy": record})
        if transitions.requeue(session, claim.job_id):
            return SendDispatch(claim.job_id, priority=Priority.BATCH_AHEAD)
        return Nothing("job closed")
    if why.kind is not None and FOR_KIND[why.kind].action is Action.FAIL:
        error = JobError.from_code(why.kind.value, JobError.INVALID_REQUEST)
        message = why.message
    else:
        error = JobError.DEADLINE_EXCEEDED
        message = f"the deadline passed with the line unanswered by provider batch {pb.id}: {why.message}"
    transitions.fail_job(session, claim.job_id, error_type=error, message=message, now=now)
    return Nothing(error.value, ended_batch=claim.batch_id, ended=True)


def _after(steps: list[NextStep]) -> None:
    """After the commits: messages for the re-queued jobs, one check per batch whose jobs ended."""
    try:
        send_steps(steps)
    except Exception:  # the broker is away: the sweeper resends queued jobs
        log.warning("could not send %d steps", len(steps), exc_info=True)
    checked: set[str] = set()
    for step in steps:
        if isinstance(step, Nothing) and step.ended_batch and step.ended_batch not in checked:
            checked.add(step.ended_batch)
            try:
                after_step(step)
            except Exception:  # the periodic check of open batches catches it
                log.warning("could not ask for a check of batch %s", step.ended_batch, exc_info=True)
