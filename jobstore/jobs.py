"""Creating and reading jobs: what the API needs from the job store.

Idempotency-Key replays are answered before a job is drafted, by the records of
`jobstore/idempotency.py` (every creating route shares them); a job only notes the key its
request carried. API keys live in `jobstore/keys.py` (re-exported here for older callers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, func, insert, inspect, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.types import ChatRequest
from jobstore import ledger
from jobstore.keys import KEY_PREFIX as KEY_PREFIX
from jobstore.keys import create_api_key as create_api_key
from jobstore.keys import find_api_key as find_api_key
from jobstore.keys import hash_secret as hash_secret
from jobstore.models import Job, JobStatus, new_id


def owner_spend(session: Session, owner_id: str) -> Decimal:
    total = session.scalar(select(func.coalesce(func.sum(Job.cost_usd), 0)).where(Job.owner_id == owner_id))
    return Decimal(total or 0)


def remaining_budget(session: Session, owner_id: str, batch_id: str | None = None) -> Decimal | None:
    """What the key (and batch) may still reserve, or None when no budget applies."""
    left = ledger.remaining(session, owner_id, batch_id, utcnow())
    return None if left is None else left.usd


def request_fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def new_job(
    *,
    owner_id: str,
    request: ChatRequest,
    strategy: str | None,
    model: str | None = None,
    routing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    stream: bool = False,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
    request_tokens: int | None = None,
) -> Job:
    """A queued job as it will be stored, not yet inserted (the API checks it can be routed,
    then `insert_job` stores it). `strategy` None stands for routing's default until then."""
    now = utcnow()
    return Job(  # every column's value set here: the row is inserted from this object
        id=new_id("job"),
        owner_id=owner_id,
        idempotency_key=idempotency_key,
        request_hash="",
        status=JobStatus.QUEUED.value,
        request=request.model_dump(mode="json", exclude_none=True),
        model_requested=model,
        strategy=strategy,
        routing=routing or {},
        job_metadata=metadata or {},
        stream=stream,
        deadline_at=deadline_at,
        request_tokens=request_tokens,
        input_tokens=0,
        output_tokens=0,
        cached_input_tokens=0,
        reasoning_tokens=0,
        cost_usd=Decimal(0),
        attempt_count=0,
        created_at=now,
        updated_at=now,
    )


def insert_job(session: Session, job: Job) -> tuple[Job, bool]:
    """Insert a drafted job. Returns (job, created), created always True now that replays are
    answered before intake (`api/idempotency.py`); the caller commits, then enqueues."""
    _fingerprint(job)
    _insert(session, job)
    return job, True


def _fingerprint(job: Job) -> None:
    job.request_hash = request_fingerprint(
        {
            "request": job.request,
            "model": job.model_requested,
            "strategy": job.strategy,
            "routing": job.routing,
        }
    )


def insert_jobs(session: Session, jobs: Sequence[Job]) -> None:
    """Insert many drafted jobs in one statement per shape of row (executemany: one round trip
    in psycopg's pipeline), the caller commits. The API's group commit stores a burst of
    submissions this way (`api/job_writer.py`)."""
    if not jobs:
        return
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in jobs:
        _fingerprint(job)
        values = _row(job)
        shapes.setdefault(tuple(values), []).append(values)
    connection = session.connection()
    for rows in shapes.values():
        connection.execute(_INSERT_JOB, rows)


def create_job(
    session: Session, *, owner_id: str, request: ChatRequest, strategy: str, **fields: Any
) -> tuple[Job, bool]:
    """`new_job` then `insert_job`, for callers that need no check in between."""
    return insert_job(session, new_job(owner_id=owner_id, request=request, strategy=strategy, **fields))


_JOB_COLUMNS = [(prop.key, prop.columns[0].key) for prop in inspect(Job).column_attrs]
_INSERT_JOB = insert(cast(Table, Job.__table__))


def _insert(session: Session, job: Job) -> None:
    """Insert the job's row with one prebuilt Core statement; the object itself stays out of
    the session. Every submission comes this way, and the ORM's unit of work for one new row
    cost more CPU than the rest of the insert."""
    session.connection().execute(_INSERT_JOB, _row(job))


def _row(job: Job) -> dict[str, Any]:
    # Unset columns are left out: they take their defaults, and SQL NULL rather than JSON null.
    values = ((column, getattr(job, attr)) for attr, column in _JOB_COLUMNS)
    return {column: value for column, value in values if value is not None}


def get_job(session: Session, job_id: str, owner_id: str | None = None) -> Job | None:
    """A job by id; with owner_id, None unless that owner made it."""
    job = session.get(Job, job_id)
    if job is None or (owner_id is not None and job.owner_id != owner_id):
        return None
    return job
