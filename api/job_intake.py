"""Accepting one job: the path POST /v1/jobs and POST /v1/chat/completions share.

Check that something can serve the request, count its tokens once (the count is stored, so
routing never counts again), and insert the job. The caller commits, then enqueues the job
only if this request created it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from api.schemas.jobs import JobCreate
from api.validation import check_routable
from jobstore.jobs import create_job, owner_spend
from jobstore.models import ApiKey, Job
from routing.catalog import get_catalog
from routing.tokens import raw_request_tokens


def remaining_budget(session: Session, owner: ApiKey) -> Decimal | None:
    """What the key may still spend, or None when it has no budget."""
    return None if owner.budget_usd is None else owner.budget_usd - owner_spend(session, owner.id)


def store_job(
    session: Session, owner: ApiKey, create: JobCreate, *, idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """Insert the job (not committed); returns (job, created). Raises ApiError when nothing can
    serve it and jobstore.jobs.IdempotencyConflict for a reused key with another body."""
    request = create.chat_request()
    tokens = raw_request_tokens(request)
    decision = check_routable(create, get_catalog(), remaining_budget(session, owner), tokens)
    deadline = datetime.now(UTC) + timedelta(seconds=create.deadline_s) if create.deadline_s else None
    return create_job(
        session,
        owner_id=owner.id,
        request=request,
        model=create.model,
        strategy=decision.strategy,
        routing=create.routing_options(),
        metadata=create.metadata,
        stream=create.stream,
        idempotency_key=idempotency_key,
        deadline_at=deadline,
        request_tokens=tokens,
    )
