"""The batch tables: uploaded files (and their content) and batches.

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
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from jobstore.models import Base, new_id

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
