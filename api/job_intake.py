"""Accepting one job: the path POST /v1/jobs and POST /v1/chat/completions share.

Draft the job row, check that something can serve it (routing is asked about that very row,
as the dispatcher will ask), count its tokens once (the count is stored, so routing never
counts again), and insert it; `store_and_send` commits it with its Idempotency-Key's record,
then hands it to the dispatch buffer. POST /v1/jobs without an Idempotency-Key stores its
drafts in groups instead (`api/job_writer.py`), through the same `check_job`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from api.dispatch_buffer import dispatch_buffer
from api.idempotency import Idempotency
from api.schemas.jobs import JobCreate
from api.validation import check_routable
from core.clock import utcnow
from core.types import ChatRequest
from jobstore import ledger
from jobstore.db import transaction
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


def store_and_send(
    owner: ApiKey, create: JobCreate, idem: Idempotency | None, answer: Callable[[Job], Any]
) -> Any:
    """Store one job, with its Idempotency-Key's record (`answer(job)`, the route's answer) in
    the same transaction, commit, then hand it to the dispatch buffer; returns the answer."""
    with transaction() as session:
        job, created = store_job(session, owner, create, idempotency_key=idem.key if idem else None)
        answered = answer(job)
        if idem is not None:
            idem.save(session, 202, answered, job.id)
    if created:
        dispatch_buffer().add(job.id)
    return answered


def check_job(job: Job, request: ChatRequest, catalog: Catalog, budget: Decimal | None) -> None:
    """Raise ApiError when nothing can serve the drafted job; else settle its strategy (the
    one routing chose when the request named none)."""
    job.strategy = check_routable(job, catalog, budget, request).strategy
