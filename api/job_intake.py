"""Accepting one job: the path POST /v1/jobs and POST /v1/chat/completions share.

Draft the job row, check that something can serve it (routing is asked about that very row,
as the dispatcher will ask), count its tokens once (the count is stored, so routing never
counts again), and insert it. The caller commits, then enqueues the job only if this request
created it. POST /v1/jobs without an Idempotency-Key stores its drafts in groups instead
(`api/job_writer.py`), through the same `check_job`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from api.schemas.jobs import JobCreate
from api.validation import check_routable
from core.clock import utcnow
from core.types import ChatRequest
from jobstore import ledger
from jobstore.jobs import insert_job, new_job, remaining_budget
from jobstore.models import ApiKey, Job
from routing.catalog import Catalog, get_catalog
from routing.tokens import raw_request_tokens


def owner_budget(session: Session, owner: ApiKey) -> Decimal | None:
    """What the key may still spend, or None when it has no budget."""
    return remaining_budget(session, owner.id) if ledger.key_has_budget(session, owner.id) else None


def draft_job(
    owner: ApiKey, create: JobCreate, request: ChatRequest, *, idempotency_key: str | None = None
) -> Job:
    """The job row this submission would store (not inserted)."""
    deadline = utcnow() + timedelta(seconds=create.deadline_s) if create.deadline_s else None
    return new_job(
        owner_id=owner.id,
        request=request,
        model=create.model,
        strategy=create.strategy,
        routing=create.routing_options(),
        metadata=create.metadata,
        stream=create.stream,
        idempotency_key=idempotency_key,
        deadline_at=deadline,
        request_tokens=raw_request_tokens(request),
    )


def store_job(
    session: Session, owner: ApiKey, create: JobCreate, *, idempotency_key: str | None = None
) -> tuple[Job, bool]:
    """Insert the job (not committed); returns (job, created). Raises ApiError when nothing can
    serve it and jobstore.jobs.IdempotencyConflict for a reused key with another body."""
    request = create.chat_request()
    job = draft_job(owner, create, request, idempotency_key=idempotency_key)
    check_job(job, request, get_catalog(), owner_budget(session, owner))
    return insert_job(session, job)


def check_job(job: Job, request: ChatRequest, catalog: Catalog, budget: Decimal | None) -> None:
    """Raise ApiError when nothing can serve the drafted job; else settle its strategy (the
    one routing chose when the request named none)."""
    job.strategy = check_routable(job, catalog, budget, request).strategy
