"""The batch tables: uploaded files (and their content), batches, and provider batches.

A batch owns many jobs (`jobs.batch_id`); its progress is always counted from them, never
kept in a counter that could drift. Its status follows OpenAI's batch lifecycle for both
kinds of batch (native document batches and OpenAI-compatible ones):

    in_progress -> finalizing -> completed
         |                  \\-> failed (finalize could not build the files)
         +-> cancelling -> finalizing -> cancelled

File content lives in Postgres, in parts of up to 1 MiB (`file_parts`), not on disk: the
API and the workers are separate containers with no shared volume, the content is as
durable as the jobs it describes, and reading or writing a part at a time keeps memory
flat however large the file.

A provider batch (`provider_batches`) is some of a batch's jobs sent through a provider's own
batch API (economy mode: `workers/economy_feeder.py` decides, `workers/provider_batch_runs.py`
submits, polls and writes the results back to the jobs).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from jobstore.models import MONEY, Base, new_id

FILE_PART_BYTES = 1 << 20


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


OPEN_BATCH_STATUSES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)
ENDED_BATCH_STATUSES = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)


class BatchKind(StrEnum):
    NATIVE = "native"  # POST /v1/document_batches
    OPENAI = "openai"  # POST /v1/batches


class StoredFile(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner_created", "owner_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_file_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    purpose: Mapped[str] = mapped_column(String(32))  # batch, batch_output, ...
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FilePart(Base):
    __tablename__ = "file_parts"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_owner_created", "owner_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("batch"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    kind: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.IN_PROGRESS)
    endpoint: Mapped[str] = mapped_column(String(64), default="/v1/chat/completions")
    completion_window: Mapped[str] = mapped_column(String(16), default="24h")
    input_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    output_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    error_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    prompt: Mapped[str | None] = mapped_column(Text)  # native: the template with {document}
    model: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str | None] = mapped_column(String(32))
    routing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # on_too_long, max_tokens, deadline_s
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_delivered_at: Mapped[datetime | None]
    batch_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    errors: Mapped[list[Any] | None] = mapped_column(
        JSON
    )  # request-level problems found on intake (OpenAI's `errors`)
    total: Mapped[int] = mapped_column(Integer, default=0)  # requests or documents, fixed at intake
    final_counts: Mapped[dict[str, Any] | None]  # counts frozen at finalize, so reads need no query
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    in_progress_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class ProviderBatchPhase(StrEnum):
    """Where llmqueue is with one provider batch (the provider's own state is `provider_state`).

    planned -> submitting -> submitted -> collecting -> settled
       ^            |             (polled until it ends at the provider)
       +------------+ (the provider asked us to come back later: a quota, a blip)
    """

    PLANNED = "planned"  # its lines are claimed (attempts running under its id); not yet sent
    SUBMITTING = "submitting"  # the provider's create call is under way
    SUBMITTED = "submitted"  # at the provider: polled until it ends there
    COLLECTING = "collecting"  # ended at the provider: its lines are being written to their jobs
    SETTLED = "settled"  # every line written: answered, sent back online, failed or cancelled


ACTIVE_PROVIDER_BATCH_PHASES = (
    ProviderBatchPhase.PLANNED,
    ProviderBatchPhase.SUBMITTING,
    ProviderBatchPhase.SUBMITTED,
    ProviderBatchPhase.COLLECTING,
)


class ProviderBatch(Base):
    """Some of a batch's jobs sent through one deployment's provider batch API at batch prices.

    Each line is one job's attempt, claimed with this row's id as its claim token (so only
    this provider batch may write it) and `custom_id` = the attempt's id at the provider. The
    provider's id and what is needed to poll it (`ref`, a `ProviderBatchRef`) are stored as
    soon as the provider has answered the create call; `next_poll_at` and the lease say when
    and by whom it is looked at next, so any worker resumes a killed one's polling."""

    __tablename__ = "provider_batches"
    __table_args__ = (
        Index("ix_provider_batches_batch", "batch_id"),
        # The poll loop's scan: provider batches not yet settled, by when they are due.
        Index(
            "ix_provider_batches_due",
            "next_poll_at",
            postgresql_where=text("phase != 'settled'"),
            sqlite_where=text("phase != 'settled'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pbatch"))
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", name="fk_provider_batches_batch_id"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", name="fk_provider_batches_owner_id"))
    provider: Mapped[str] = mapped_column(String(32))
    deployment: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(16), default=ProviderBatchPhase.PLANNED)
    provider_state: Mapped[str | None] = mapped_column(String(16))  # a ProviderBatchState
    provider_status: Mapped[str | None] = mapped_column(String(64))  # the provider's own word
    ref: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # ProviderBatchRef.to_json()
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)  # counts against the enqueued quota
    input_bytes: Mapped[int] = mapped_column(Integer, default=0)
    request_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the provider's, last poll
    # Once settled: how its lines ended (answered here, sent back online, failed, cancelled).
    lines_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    lines_online: Mapped[int] = mapped_column(Integer, default=0)
    lines_failed: Mapped[int] = mapped_column(Integer, default=0)
    lines_cancelled: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))  # at batch prices
    estimated_cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    estimated_online_cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    reason: Mapped[str] = mapped_column(Text, default="")  # routing's decision, in words
    give_up_at: Mapped[datetime]  # lines not answered by then are cancelled and go online
    deadline_at: Mapped[datetime | None]  # past it, a line that comes back unanswered fails
    next_poll_at: Mapped[datetime | None]
    poll_interval_s: Mapped[float] = mapped_column(default=0.0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]  # a worker is on it until then
    lease_token: Mapped[str | None] = mapped_column(String(40))
    cancel_requested_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(String(32))  # a ProviderBatchCancel
    cancel_sent_at: Mapped[datetime | None]  # the provider was asked to stop
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]  # ended at the provider
    settled_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ProviderBatchCancel(StrEnum):
    """Why llmqueue asked a provider to stop a batch."""

    BATCH_CANCELLED = "batch_cancelled"  # the llmqueue batch was cancelled: unanswered lines are too
    GAVE_UP = "gave_up"  # its give-up time came: unanswered lines go online
