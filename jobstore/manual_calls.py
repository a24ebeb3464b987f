"""Calls the API makes itself (the provider test), recorded as jobs so their cost is in the ledger.

Such a call reserves its maximum cost against the calling key's budget before it is made
(`hold`, committed on its own) and, once answered, is written as an ended job with its one
attempt, its usage and cost, settling the reservation in the same transaction (`record`).
It never goes through a queue: the job is born ended, so neither the dispatcher nor the
sweeper ever sees it open. It shows in the key's jobs, stats and spend like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from jobstore import ledger
from jobstore.models import Attempt, AttemptStatus, Job, JobStatus, new_id


@dataclass(frozen=True)
class CallOutcome:
    """What one call answered (or the error it ended with)."""

    provider: str
    model: str
    deployment: str
    text: str | None
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    latency_ms: float | None
    error_type: str | None
    error_message: str | None
    emulated: bool
    provider_request_id: str | None


def hold(session: Session, owner_id: str, amount: Decimal, now: datetime) -> bool:
    """Reserve the call's maximum cost against the key's budget; False when it would pass it."""
    return ledger.reserve(session, owner_id, None, amount, now)


def release(session: Session, owner_id: str, amount: Decimal) -> None:
    """The call was not made after all (or its record could not be written)."""
    ledger.release(session, owner_id, None, amount)


def record(
    session: Session,
    owner_id: str,
    request: dict[str, Any],
    outcome: CallOutcome,
    *,
    reserved: Decimal,
    metadata: dict[str, Any],
    started_at: datetime,
    now: datetime,
) -> tuple[Job, list[ledger.SoftAlert]]:
    """Write the ended job and its attempt, and settle the reservation to the real cost (the
    caller commits). Returns the job and the soft-limit alerts the settlement raised."""
    succeeded = outcome.error_type is None
    job = Job(
        id=new_id("job"),
        owner_id=owner_id,
        request_hash="",
        status=(JobStatus.SUCCEEDED if succeeded else JobStatus.FAILED).value,
        request=request,
        model_requested=outcome.model,
        strategy="manual",
        routing={},
        job_metadata=metadata,
        stream=False,
        provider=outcome.provider,
        model=outcome.model,
        deployment=outcome.deployment,
        result_text=outcome.text,
        finish_reason=outcome.finish_reason,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cached_input_tokens=outcome.cached_input_tokens,
        reasoning_tokens=outcome.reasoning_tokens,
        cost_usd=outcome.cost_usd,
        latency_ms=outcome.latency_ms,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        emulated=outcome.emulated,
        attempt_count=1,
        created_at=started_at,
        updated_at=now,
        finished_at=now,
    )
    attempt = Attempt(
        id=new_id("att"),
        job_id=job.id,
        number=1,
        provider=outcome.provider,
        model=outcome.model,
        deployment=outcome.deployment,
        status=(AttemptStatus.SUCCEEDED if succeeded else AttemptStatus.FAILED).value,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cached_input_tokens=outcome.cached_input_tokens,
        reasoning_tokens=outcome.reasoning_tokens,
        cost_usd=outcome.cost_usd,
        latency_ms=outcome.latency_ms,
        finish_reason=outcome.finish_reason,
        error_type=outcome.error_type,
        error_message=outcome.error_message,
        reserved_usd=Decimal(0),
        emulated=outcome.emulated,
        provider_request_id=outcome.provider_request_id,
        created_at=started_at,
        started_at=started_at,
        finished_at=now,
    )
    session.add(job)
    session.add(attempt)
    session.flush()
    alerts = ledger.settle(session, owner_id, None, reserved=reserved, cost=outcome.cost_usd, now=now)
    return job, alerts
