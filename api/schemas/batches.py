"""Batch and file objects as clients see them: OpenAI's `batch` and `file` objects (fields,
status values and request_counts as OpenAI defines them) and the native `document_batch`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jobstore.batch_models import Batch, StoredFile
from jobstore.batches import BatchCounts
from jobstore.models import JobStatus


def unix(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


class FileObject(BaseModel):
    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def of(cls, f: StoredFile) -> FileObject:
        return cls(
            id=f.id, bytes=f.bytes, created_at=unix(f.created_at) or 0, filename=f.filename, purpose=f.purpose
        )


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchErrors(BaseModel):
    object: str = "list"
    data: list[dict[str, Any]]


class BatchObject(BaseModel):
    """OpenAI's batch object."""

    id: str
    object: str = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None
    cost_usd: str = Field(description="llmqueue extension: the batch's spend so far (Decimal USD).")
    max_cost_usd: str | None = Field(
        default=None, description="llmqueue extension: the batch's own budget, when it was given one."
    )

    @classmethod
    def of(cls, b: Batch, counts: BatchCounts) -> BatchObject:
        failed = counts.of(JobStatus.FAILED, JobStatus.CANCELLED)
        return cls(
            id=b.id,
            endpoint=b.endpoint,
            errors=BatchErrors(data=b.errors) if b.errors else None,
            input_file_id=b.input_file_id or "",
            completion_window=b.completion_window,
            status=b.status,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
            created_at=unix(b.created_at) or 0,
            in_progress_at=unix(b.in_progress_at),
            expires_at=unix(b.expires_at),
            finalizing_at=unix(b.finalizing_at),
            completed_at=unix(b.completed_at),
            failed_at=unix(b.failed_at),
            expired_at=unix(b.expired_at),
            cancelling_at=unix(b.cancelling_at),
            cancelled_at=unix(b.cancelled_at),
            request_counts=RequestCounts(
                total=b.total, completed=counts.of(JobStatus.SUCCEEDED), failed=failed
            ),
            metadata=b.batch_metadata or None,
            cost_usd=str(counts.cost_usd),
            max_cost_usd=(b.options or {}).get("max_cost_usd"),
        )


class BatchList(BaseModel):
    object: str = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DocumentCounts(BaseModel):
    total: int = Field(description="Documents in the batch (each line or file, good or bad).")
    queued: int
    running: int = Field(description="Dispatched to a provider queue or being called.")
    succeeded: int
    failed: int
    cancelled: int
    done: int = Field(description="succeeded + failed + cancelled")


class DocumentBatch(BaseModel):
    """A native document batch and its progress, counted from its jobs."""

    id: str
    object: str = "document_batch"
    status: str = Field(
        description="in_progress, finalizing, completed, expired (past its deadline), cancelling, cancelled."
    )
    prompt: str
    model: str | None
    strategy: str | None
    options: dict[str, Any]
    counts: DocumentCounts
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description="Spend so far, every part of every document (Decimal USD).")
    eta_s: float | None = Field(description="Seconds left at the rate documents have ended so far.")
    errors: list[dict[str, Any]] | None = Field(description="The first bad lines found on intake.")
    output_file_id: str | None
    error_file_id: str | None
    results_url: str
    webhook_url: str | None
    metadata: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None
    cancelled_at: datetime | None

    @classmethod
    def of(cls, b: Batch, counts: BatchCounts, eta: float | None, base_url: str) -> DocumentBatch:
        return cls(
            id=b.id,
            status=b.status,
            prompt=b.prompt or "",
            model=b.model,
            strategy=b.strategy,
            options=b.options,
            counts=DocumentCounts(
                total=b.total,
                queued=counts.of(JobStatus.QUEUED),
                running=counts.of(JobStatus.DISPATCHED, JobStatus.RUNNING),
                succeeded=counts.of(JobStatus.SUCCEEDED),
                failed=counts.of(JobStatus.FAILED),
                cancelled=counts.of(JobStatus.CANCELLED),
                done=counts.ended,
            ),
            input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens,
            cost_usd=str(counts.cost_usd),
            eta_s=eta,
            errors=b.errors or None,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
            results_url=f"{base_url}/v1/document_batches/{b.id}/results",
            webhook_url=b.webhook_url,
            metadata=b.batch_metadata,
            created_at=b.created_at,
            completed_at=b.completed_at,
            cancelled_at=b.cancelled_at,
        )


class DocumentBatchList(BaseModel):
    object: str = "list"
    data: list[DocumentBatch]
    has_more: bool
