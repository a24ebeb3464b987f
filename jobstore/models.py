"""The job store's tables: API keys, jobs and the attempts that served them.

The schema is created only by Alembic migrations (`migrations/`), generated from this
metadata. A job is the durable unit of work; an attempt is one call to one deployment.
A job's result, usage and cost come from exactly one succeeded attempt; failed attempts
carry the error that ended them, so a job's attempts show every retry and failover hop.

A job is of one `kind`: a chat completion, or an embedding call (one provider call carrying
up to its model's per-call limit of inputs; `jobstore/embedding_jobs.py`), whose vectors are
written to `job_vectors`, one row per input, with the job's result.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.accounts import BudgetPeriod as BudgetPeriod
from core.accounts import KeyRole as KeyRole
from core.clock import aware, utcnow

MONEY = Numeric(20, 8)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for the dispatcher (new, or back after a failover)
    DISPATCHED = "dispatched"  # an attempt is on a provider queue
    RUNNING = "running"  # a worker is calling the provider
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.DISPATCHED, JobStatus.RUNNING)
ENDED_JOB_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    CHAT = "chat"  # a chat completion: `request` is a ChatRequest
    EMBEDDING = "embedding"  # one embedding call: `request` holds its inputs (jobstore/embedding_jobs.py)


class AttemptStatus(StrEnum):
    PENDING = "pending"  # created and (being) sent to a provider queue
    RUNNING = "running"  # claimed by a worker until lease_until
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the secret
    key_prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; not enough to use
    role: Mapped[str] = mapped_column(String(16), default=KeyRole.MEMBER)
    # The key's own rate limits across every deployment (None: none of its own).
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    # Where the key's budget alerts go (a signed POST), when it has one.
    alert_webhook_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Budget(Base):
    """A spend limit with its ledger: a key's (batch_id None) or one batch's (`max_cost_usd`).

    `spent_usd` is what calls settled in the current period; `reserved_usd` what calls in
    flight may still cost at most. A call reserves before it is made, with one conditional
    UPDATE that refuses when spent + reserved + this would pass the limit, so no race can
    overshoot (`jobstore/ledger.py`)."""

    __tablename__ = "budgets"
    __table_args__ = (
        Index(
            "uq_budgets_key",
            "owner_id",
            unique=True,
            postgresql_where=text("batch_id IS NULL"),
            sqlite_where=text("batch_id IS NULL"),
        ),
        Index("uq_budgets_batch", "batch_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("bud"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", name="fk_budgets_batch_id"))
    limit_usd: Mapped[Decimal] = mapped_column(MONEY)
    period: Mapped[str] = mapped_column(String(16), default=BudgetPeriod.LIFETIME)
    soft_limit_usd: Mapped[Decimal | None] = mapped_column(MONEY)  # crossing it alerts, once a period
    period_start: Mapped[datetime] = mapped_column(default=utcnow)
    spent_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    reserved_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    soft_alerted_for: Mapped[datetime | None]  # the period_start whose soft-limit alert was sent
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdempotencyRecord(Base):
    """A creating request made with an Idempotency-Key, and what it answered (kept 24 hours):
    a replay with the same body gets the same answer, another body a 409."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)  # the cleanup's scan

    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(64))  # e.g. "POST /v1/batches"
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the whole request body
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    resource_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_batch_status", "batch_id", "status"),  # a batch's counts by status
        Index("ix_jobs_batch_line", "batch_id", "line_number"),  # its results, in input order
        # A batch's jobs the feeder holds (not_before = HELD_UNTIL), in line order.
        Index("ix_jobs_batch_held", "batch_id", "not_before", "line_number"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    # The Idempotency-Key of the request that made the job, for the record: replays are
    # answered from `idempotency_keys` (jobstore/idempotency.py), not from this column.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.CHAT, server_default=JobKind.CHAT.value)
    request: Mapped[dict[str, Any]]
    model_requested: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(32))
    routing: Mapped[dict[str, Any]] = mapped_column(default=dict)  # floors, ceilings, fallbacks, weights
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    stream: Mapped[bool] = mapped_column(default=False)
    # The request's o200k token count from submission (routing calibrates it per provider);
    # None where it was not counted then, and routing counts it itself.
    request_tokens: Mapped[int | None] = mapped_column(Integer)
    explanation: Mapped[dict[str, Any] | None]
    provider: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(200))
    result_text: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[Any] | None] = mapped_column(JSON)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    latency_ms: Mapped[float | None]  # the succeeded provider call's own latency
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    emulated: Mapped[bool] = mapped_column(default=False)  # answered by the built-in emulator
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # waiting for a cooldown to end
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]
    # Batch membership (jobstore/batch_models.py): the request's custom_id (or document id),
    # its line in the input, and for a split document its map part or the reduce that combines them.
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", name="fk_jobs_batch_id"))
    custom_id: Mapped[str | None] = mapped_column(String(255))
    line_number: Mapped[int | None] = mapped_column(Integer)
    stage: Mapped[str | None] = mapped_column(String(8))  # None (whole document), "map" or "reduce"
    part: Mapped[int | None] = mapped_column(Integer)  # a map job's chunk number, from 1
    # The provider batch (jobstore/batch_models.py) this job's line is in, or was answered,
    # failed or cancelled by; None for a job that went online (cleared when a line goes back).
    provider_batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("provider_batches.id", name="fk_jobs_provider_batch_id")
    )

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="job", order_by="Attempt.number", lazy="selectin"
    )

    @property
    def total_latency_ms(self) -> float | None:
        """Submit to finish: queueing, retries, failovers and every call (`latency_ms` is the
        answering call's alone). None until the job ends."""
        if self.finished_at is None or self.created_at is None:
            return None
        return round((aware(self.finished_at) - aware(self.created_at)).total_seconds() * 1000, 2)


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),
        # The sweeper's look for expired leases and overdue pending attempts.
        Index("ix_attempts_status_lease", "status", "lease_until"),
        # A provider batch's lines (only attempts that are lines have one).
        Index(
            "ix_attempts_provider_batch",
            "provider_batch_id",
            postgresql_where=text("provider_batch_id IS NOT NULL"),
            sqlite_where=text("provider_batch_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("att"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.PENDING)
    claim_token: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # a retry's scheduled time
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    latency_ms: Mapped[float | None]
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_after_s: Mapped[float | None]
    # What this call may still cost at most, held against the key's (and batch's) budget
    # until the call settles or is released.
    reserved_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    # The output cap this call is made with when the job set none but a budget needs one (the
    # reservation's upper bound); None: the job's own max_tokens, if any.
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    emulated: Mapped[bool] = mapped_column(default=False)  # sent to the built-in emulator
    provider_request_id: Mapped[str | None] = mapped_column(String(200))
    rate_limit_headers: Mapped[dict[str, Any] | None]
    # Set when this attempt is a line of a provider batch (whose id is then its claim token).
    provider_batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("provider_batches.id", name="fk_attempts_provider_batch_id")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="attempts")


class JobVector(Base):
    """One input's vector from a succeeded embedding job: float32, little-endian, `dims` long,
    in the job's input order (`position`), under the id the input was submitted with."""

    __tablename__ = "job_vectors"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_id: Mapped[str] = mapped_column(Text)
    dims: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
