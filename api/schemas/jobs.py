"""Job schemas: what a client sends (`JobCreate`) and what it gets back (`JobPublic`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.embeddings import VectorPublic
from core.types import ChatRequest, ToolCall
from jobstore.models import Attempt, Job, JobKind

MAX_DEADLINE_S = 366 * 86_400  # a year: a deadline further off is no deadline


class JobCreate(ChatRequest):
    """A generation job: an OpenAI-style chat request plus how to route it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "messages": [{"role": "user", "content": "Summarise: llmqueue runs LLM jobs."}],
                    "strategy": "cost",
                    "max_tokens": 200,
                    "metadata": {"document": "readme"},
                }
            ]
        },
    )
    model: str | None = Field(default=None, description="A catalog model id or deployment name.")
    strategy: str | None = Field(
        default=None,
        description="cost, performance, quality, balanced, round_robin or manual. "
        "Default: manual when model is given, else cost.",
    )
    fallbacks: list[str] = Field(default_factory=list, description="Models to try, in order, after `model`.")
    min_quality: float | None = Field(default=None, ge=0, le=100, description="Quality floor (0-100).")
    max_cost_usd: Decimal | None = Field(default=None, ge=0, description="Ceiling on the estimated cost.")
    cost_weight: float = Field(default=0.6, ge=0, le=1, description="balanced: weight of cost vs quality.")
    deadline_s: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_S, description="Give up this many seconds after submit."
    )
    stream: bool = Field(default=False, description="Publish tokens for GET /v1/jobs/{id}/stream.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def chat_request(self) -> ChatRequest:
        return ChatRequest.model_validate(
            self.model_dump(include=set(ChatRequest.model_fields), by_alias=True)
        )

    def routing_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"cost_weight": self.cost_weight}
        if self.fallbacks:
            options["fallbacks"] = self.fallbacks
        if self.min_quality is not None:
            options["min_quality"] = self.min_quality
        if self.max_cost_usd is not None:
            options["max_cost_usd"] = str(self.max_cost_usd)
        return options


class JobAccepted(BaseModel):
    id: str
    status: str
    url: str
    created: bool = Field(
        description="True: this answer created the job. A retry with the same Idempotency-Key gets this "
        "same body again, marked by the response header Idempotent-Replayed: true."
    )


class UsagePublic(BaseModel):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int


class ErrorPublic(BaseModel):
    type: str
    message: str


class AttemptPublic(BaseModel):
    number: int
    provider: str
    model: str
    deployment: str
    status: str
    input_tokens: int
    output_tokens: int
    cost_usd: str
    latency_ms: float | None = Field(description="This call's own duration, from request to answer or error.")
    error: ErrorPublic | None
    retry_after_s: float | None
    provider_request_id: str | None
    provider_batch_id: str | None = Field(
        default=None, description="Set when this attempt was a line of a provider batch (economy mode)."
    )
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptPublic:
        return cls(
            number=a.number,
            provider=a.provider,
            model=a.model,
            deployment=a.deployment,
            status=a.status,
            input_tokens=a.input_tokens,
            output_tokens=a.output_tokens,
            cost_usd=str(a.cost_usd),
            latency_ms=a.latency_ms,
            error=ErrorPublic(type=a.error_type, message=a.error_message or "") if a.error_type else None,
            retry_after_s=a.retry_after_s,
            provider_request_id=a.provider_request_id,
            provider_batch_id=a.provider_batch_id,
            started_at=a.started_at,
            finished_at=a.finished_at,
        )


class JobPublic(BaseModel):
    id: str
    url: str
    status: str
    kind: str = Field(default="chat", description="chat, or embedding (one provider call's vectors).")
    model_requested: str | None
    strategy: str
    provider: str | None
    model: str | None
    deployment: str | None
    result: str | None = Field(description="The generated text, once succeeded.")
    tool_calls: list[ToolCall] | None
    finish_reason: str | None
    usage: UsagePublic
    cost_usd: str = Field(description="Decimal USD, as a string to keep every digit.")
    latency_ms: float | None = Field(
        description="Milliseconds the provider call that answered took (that call alone: not the "
        "time queued, nor earlier failed calls). None while running, and for a job no call answered."
    )
    total_latency_ms: float | None = Field(
        description="Milliseconds from submission (created_at) to the end (finished_at): queueing, "
        "retries, failovers and every call. None until the job ends."
    )
    error: ErrorPublic | None = Field(description="Why the job failed (type and message), if it did.")
    attempts: list[AttemptPublic]
    explanation: dict[str, Any] | None = Field(
        description="How routing chose; for a batch's job in economy mode, `economy` says whether it "
        "went by provider batch or online, and why."
    )
    provider_batch_id: str | None = Field(
        default=None,
        description="The provider batch (economy mode) that holds or answered this job's line; "
        "None when it went online.",
    )
    metadata: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    inputs: int | None = Field(default=None, description="An embedding job's number of inputs.")
    embeddings: list[VectorPublic] | None = Field(
        default=None,
        description="An embedding job's vectors in input order, once it succeeded (include_vectors=true).",
    )

    @classmethod
    def of(cls, job: Job, base_url: str) -> JobPublic:
        embedding = job.kind == JobKind.EMBEDDING
        return cls(
            id=job.id,
            url=f"{base_url}/v1/jobs/{job.id}",
            status=job.status,
            kind=job.kind or JobKind.CHAT.value,
            inputs=len((job.request or {}).get("inputs") or ()) if embedding else None,
            model_requested=job.model_requested,
            strategy=job.strategy,
            provider=job.provider,
            model=job.model,
            deployment=job.deployment,
            result=job.result_text,
            tool_calls=[ToolCall.model_validate(t) for t in job.tool_calls] if job.tool_calls else None,
            finish_reason=job.finish_reason,
            usage=UsagePublic(
                input_tokens=job.input_tokens,
                output_tokens=job.output_tokens,
                cached_input_tokens=job.cached_input_tokens,
                reasoning_tokens=job.reasoning_tokens,
            ),
            cost_usd=str(job.cost_usd),
            latency_ms=job.latency_ms,
            total_latency_ms=job.total_latency_ms,
            error=ErrorPublic(type=job.error_type, message=job.error_message or "")
            if job.error_type
            else None,
            attempts=[AttemptPublic.of(a) for a in job.attempts],
            explanation=_explanation(job),
            provider_batch_id=job.provider_batch_id,
            metadata=job.job_metadata,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


class JobList(BaseModel):
    data: list[JobPublic]
    has_more: bool


class JobRequestPublic(BaseModel):
    id: str
    request: dict[str, Any] = Field(description="messages and generation parameters, as submitted")
    routing: dict[str, Any] = Field(description="fallbacks, floors, ceilings and weights, as submitted")


def _explanation(job: Job) -> dict[str, Any] | None:
    """The routing explanation, with economy mode's decision (kept in the job's routing record,
    since the dispatcher writes its own explanation when the job goes online)."""
    economy = (job.routing or {}).get("economy")
    if economy is None:
        return job.explanation
    return {**(job.explanation or {}), "economy": economy}
