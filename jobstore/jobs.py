"""Creating and reading jobs, and API keys: what the API needs from the job store.

Submission is idempotent per owner: the same Idempotency-Key with the same request returns
the first job; with a different request it is a conflict, never a second job.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobstore.models import ApiKey, Job, JobStatus
from llmqueue.types import ChatRequest

KEY_PREFIX = "lq_"


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different request")
        self.job_id = job_id


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, name: str, budget_usd: Decimal | None = None) -> tuple[ApiKey, str]:
    """A new key; the secret is returned once and only its hash is stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, key_hash=hash_secret(secret), key_prefix=secret[:10], budget_usd=budget_usd)
    session.add(key)
    session.flush()
    return key, secret


def find_api_key(session: Session, secret: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return key


def owner_spend(session: Session, owner_id: str) -> Decimal:
    total = session.scalar(select(func.coalesce(func.sum(Job.cost_usd), 0)).where(Job.owner_id == owner_id))
    return Decimal(total or 0)


def request_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def create_job(
    session: Session,
    *,
    owner_id: str,
    request: ChatRequest,
    strategy: str,
    model: str | None = None,
    routing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    stream: bool = False,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
    request_tokens: int | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job, or return the one this Idempotency-Key already made.

    Returns (job, created). The caller commits, then enqueues only if created.
    """
    body = request.model_dump(mode="json", exclude_none=True)
    fingerprint = request_fingerprint(
        {"request": body, "model": model, "strategy": strategy, "routing": routing or {}}
    )
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, owner_id, idempotency_key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise IdempotencyConflict(existing.id)
            return existing, False
    job = Job(
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        status=JobStatus.QUEUED,
        request=body,
        model_requested=model,
        strategy=strategy,
        routing=routing or {},
        job_metadata=metadata or {},
        stream=stream,
        deadline_at=deadline_at,
        request_tokens=request_tokens,
    )
    if idempotency_key is None:
        session.add(job)
        session.flush()
        return job, True
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # Two requests with one key raced; the other insert won.
        existing = _by_idempotency_key(session, owner_id, idempotency_key)
        if existing is None:
            raise
        if existing.request_hash != fingerprint:
            raise IdempotencyConflict(existing.id) from None
        return existing, False
    return job, True


def _by_idempotency_key(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def get_job(session: Session, job_id: str, owner_id: str | None = None) -> Job | None:
    """A job by id; with owner_id, None unless that owner made it."""
    job = session.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        return None
    return job
