"""Batch and file objects as clients see them: OpenAI's `batch` and `file` objects (fields,
status values and request_counts as OpenAI defines them) and the native `document_batch`,
each with economy mode's provider batches and which way its jobs went."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from jobstore import provider_batches
from jobstore.batch_models import Batch, ProviderBatch, StoredFile
from jobstore.batches import BatchCounts, economy_eligible, economy_mode
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


class ProviderBatchPublic(BaseModel):
    """One provider batch (economy mode): some of the batch's jobs sent through a provider's own
    batch API, at its batch prices."""

    id: str = Field(description="llmqueue's id for it.")
    provider: str
    deployment: str
    model: str
    provider_batch_id: str | None = Field(description="The provider's own id, once submitted.")
    phase: str = Field(description="planned, submitting, submitted, collecting or settled.")
    state: str | None = Field(description="The provider's state: validating, in_progress, completed, ...")
    provider_status: str | None = Field(description="The provider's own word for its state.")
    lines: int
    request_counts: RequestCounts | None = Field(description="The provider's counts at the last poll.")
    lines_succeeded: int = Field(description="Once settled: lines it answered.")
    lines_online: int = Field(description="Once settled: lines it failed or never ran, sent back online.")
    lines_failed: int = Field(description="Once settled: lines failed (the deadline had passed).")
    lines_cancelled: int = Field(description="Once settled: lines cancelled with the batch.")
    cost_usd: str = Field(description="What its answered lines cost, at batch prices.")
    estimated_cost_usd: str
    estimated_online_cost_usd: str = Field(description="The same lines' estimate at online prices.")
    reason: str = Field(description="Why routing sent these jobs by provider batch.")
    give_up_at: datetime
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    ended_at: datetime | None
    settled_at: datetime | None

    @classmethod
    def of(cls, pb: ProviderBatch) -> ProviderBatchPublic:
        counts = pb.request_counts
        return cls(
            id=pb.id,
            provider=pb.provider,
            deployment=pb.deployment,
            model=pb.model,
            provider_batch_id=(pb.ref or {}).get("batch_id"),
            phase=pb.phase,
            state=pb.provider_state,
            provider_status=pb.provider_status,
            lines=pb.line_count,
            request_counts=RequestCounts.model_validate(counts) if counts else None,
            lines_succeeded=pb.lines_succeeded,
            lines_online=pb.lines_online,
            lines_failed=pb.lines_failed,
            lines_cancelled=pb.lines_cancelled,
            cost_usd=str(pb.cost_usd),
            estimated_cost_usd=str(pb.estimated_cost_usd),
            estimated_online_cost_usd=str(pb.estimated_online_cost_usd),
            reason=pb.reason,
            give_up_at=pb.give_up_at,
            error=f"{pb.error_type}: {pb.error_message}" if pb.error_type else pb.error_message,
            created_at=pb.created_at,
            submitted_at=pb.submitted_at,
            ended_at=pb.ended_at,
            settled_at=pb.settled_at,
        )


@dataclass(frozen=True)
class EconomyView:
    """What a batch's economy mode did, for its public object."""

    delivery: str
    provider_batches: list[ProviderBatch]
    jobs_by_path: dict[str, int] | None  # None when no job could go by provider batch

    @classmethod
    def read(cls, session: Session, batch: Batch) -> EconomyView:
        eligible = economy_eligible(batch)
        return cls(
            economy_mode(batch).value,
            provider_batches.of_batch(session, batch.id) if eligible else [],
            provider_batches.jobs_by_path(session, batch.id) if eligible else None,
        )

    def fields(self) -> dict[str, Any]:
        return {
            "delivery": self.delivery,
            "provider_batches": [ProviderBatchPublic.of(pb) for pb in self.provider_batches],
            "jobs_by_path": self.jobs_by_path,
        }


MODE_DESCRIPTION = (
    "llmqueue extension: economy mode. `auto`: by provider batch (the provider's batch API, at its "
    "batch prices) where the deadline allows and it saves enough; `economy`: wherever it saves "
    "anything; `online`: never."
)
PATHS_DESCRIPTION = (
    "llmqueue extension: the batch's jobs by the way they went: provider_batch, online, deciding "
    "(waiting for economy planning), none (ended without being sent: a bad line, a cancel)."
)


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
    delivery: str = Field(default="auto", description=MODE_DESCRIPTION)
    provider_batches: list[ProviderBatchPublic] = Field(
        default_factory=list, description="llmqueue extension: its provider batches (economy mode)."
    )
    jobs_by_path: dict[str, int] | None = Field(default=None, description=PATHS_DESCRIPTION)

    @classmethod
    def of(cls, b: Batch, counts: BatchCounts, economy: EconomyView | None = None) -> BatchObject:
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
            **(economy.fields() if economy is not None else {}),
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
    mode: str = Field(
        default="generate",
        description="generate, or embed: then `counts` are of provider calls (each embeds many chunks) "
        "and documents refused at intake, and `options` say how many documents, chunks and calls.",
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
    delivery: str = Field(default="auto", description=MODE_DESCRIPTION.removeprefix("llmqueue extension: "))
    provider_batches: list[ProviderBatchPublic] = Field(
        default_factory=list, description="Its provider batches (economy mode)."
    )
    jobs_by_path: dict[str, int] | None = Field(
        default=None, description=PATHS_DESCRIPTION.removeprefix("llmqueue extension: ")
    )

    @classmethod
    def of(
        cls,
        b: Batch,
        counts: BatchCounts,
        eta: float | None,
        base_url: str,
        economy: EconomyView | None = None,
    ) -> DocumentBatch:
        return cls(
            id=b.id,
            status=b.status,
            mode=(b.options or {}).get("mode") or "generate",
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
            **(economy.fields() if economy is not None else {}),
        )


class DocumentBatchList(BaseModel):
    object: str = "list"
    data: list[DocumentBatch]
    has_more: bool


class DocumentError(BaseModel):
    code: str = Field(description="Why: the job's error type, or batch_cancelled.")
    message: str


class DocumentRow(BaseModel):
    """One document's result (a line of GET /v1/document_batches/{id}/results)."""

    id: str | None = Field(description="The document's id (its file name, or the JSONL line's id).")
    line: int | None = Field(description="Its position in the upload, from 1.")
    status: str
    provider: str | None
    model: str | None
    input_tokens: int = Field(description="With a split document's parts.")
    output_tokens: int
    cost_usd: str = Field(description="Decimal USD as a string, with a split document's parts.")
    latency_ms: float | None = Field(description="The answering provider call's own latency.")
    total_latency_ms: float | None = Field(description="Submission to the end of this document's job.")
    parts: int = Field(description="1, or how many parts a document over its model's context was split into.")
    result: str | None
    error: DocumentError | None
    metadata: dict[str, Any]
    job_id: str


class DocumentPart(BaseModel):
    part: int | None
    status: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: str
    result: str | None
    error: str | None


class DocumentDetail(DocumentRow):
    parts_detail: list[DocumentPart] = Field(description="A split document's map parts; empty otherwise.")
