"""OpenAI's request shapes as llmqueue accepts them: a chat completion body (for
`POST /v1/chat/completions` and each line of a `/v1/batches` input file) and batch creation.

`model` is a catalog model or deployment, or a routing alias (`auto`, `cost`, `quality`,
`balanced`, `performance`) that lets llmqueue choose. OpenAI parameters llmqueue does not
use (`user`, `logprobs`, penalties, ...) are accepted and ignored, so unchanged client code
keeps working; `n` above 1 is refused, since one job gives one answer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import ApiError
from api.limits import check_messages, check_metadata
from api.schemas.jobs import JobCreate
from api.schemas.keys import MAX_USD
from core.types import Message, ResponseFormat, Tool, ToolCall, ToolChoice
from jobstore.batches import EconomyMode
from routing.catalog import Catalog

# alias -> routing strategy
MODEL_ALIASES = {
    "auto": "balanced",
    "cost": "cost",
    "quality": "quality",
    "balanced": "balanced",
    "performance": "performance",
}


class ModelNotFound(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist: name a catalog model or deployment "
            f"(GET /v1/models) or a routing alias ({', '.join(MODEL_ALIASES)})"
        )


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    """The body of OpenAI's `POST /v1/chat/completions`."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"model": "cost", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 50},
                {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "Answer in one sentence."},
                        {"role": "user", "content": "What is backpressure?"},
                    ],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ]
        },
    )
    model: str = Field(
        min_length=1,
        description="A catalog model or deployment, or auto/cost/quality/"
        "balanced/performance to let llmqueue route.",
    )
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1: one job gives one answer.")
    metadata: dict[str, str] | None = None

    def to_job(self, catalog: Catalog, *, stream: bool | None = None) -> JobCreate:
        """The job this completion becomes; ModelNotFound when `model` names nothing known."""
        strategy = MODEL_ALIASES.get(self.model)
        if strategy is None and catalog.model(self.model) is None and catalog.deployment(self.model) is None:
            raise ModelNotFound(self.model)
        return JobCreate(
            messages=self.messages,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
            seed=self.seed,
            tools=self.tools,
            tool_choice=self.tool_choice,
            response_format=self.response_format,
            model=None if strategy else self.model,
            strategy=strategy,
            stream=self.stream if stream is None else stream,
            metadata=dict(self.metadata or {}),
        )


def parse_completion(body: Any, catalog: Catalog, where: str = "") -> JobCreate:
    """A chat completion body as a JobCreate, or an ApiError naming the field (prefixed `where`)."""
    try:
        completion = ChatCompletionCreate.model_validate(body)
        check_messages(completion.messages, where)
        check_metadata(completion.metadata, f"{where}metadata")
        return completion.to_job(catalog, stream=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ApiError(
            400, f"{where}{field}: {first['msg']}", param=field or None, code="invalid_value"
        ) from None
    except ModelNotFound as exc:
        raise ApiError(404, str(exc), param="model", code="model_not_found") from None


class BatchCreate(BaseModel):
    """The body of OpenAI's `POST /v1/batches`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "input_file_id": "file_01J...",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                    "metadata": {"run": "nightly"},
                }
            ]
        },
    )
    input_file_id: str
    endpoint: str = Field(description="/v1/chat/completions or /v1/embeddings.")
    completion_window: str = Field(default="24h", description="Only 24h, as OpenAI.")
    metadata: dict[str, str] | None = None
    webhook_url: str | None = Field(
        default=None, description="llmqueue extension: POSTed when the batch ends."
    )
    max_cost_usd: Decimal | None = Field(
        default=None,
        gt=0,
        le=MAX_USD,
        description="llmqueue extension (the openai SDK sends it with extra_body): the most the whole "
        "batch may spend; lines past it fail with budget_exceeded.",
    )
    delivery: EconomyMode = Field(
        default=EconomyMode.AUTO,
        description="llmqueue extension (extra_body): `auto` sends lines through a provider's own batch "
        "API at its batch prices where that saves enough within the completion window; `economy` "
        "wherever it saves anything; `online` never.",
    )


# ------------------------------------------------------------- answers (documentation)
# What `jobstore.batch_results.chat_completion` builds, described for the OpenAPI document.


class CompletionMessage(BaseModel):
    role: str = Field(description="Always assistant.")
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    finish_reason: str = Field(description="stop, length, tool_calls or content_filter.")
    logprobs: None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class LlmqueueExtension(BaseModel):
    job_id: str = Field(description="The job behind this answer: GET /v1/jobs/{job_id}.")
    provider: str | None
    deployment: str | None
    cost_usd: str = Field(description="Decimal USD, as a string.")
    strategy: str


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object, plus llmqueue's `llmqueue` extension."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "chatcmpl-job_01J...",
                    "object": "chat.completion",
                    "created": 1767225600,
                    "model": "gpt-4o-mini",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 9,
                        "completion_tokens": 3,
                        "total_tokens": 12,
                        "prompt_tokens_details": {"cached_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0},
                    },
                    "system_fingerprint": None,
                    "llmqueue": {
                        "job_id": "job_01J...",
                        "provider": "openai",
                        "deployment": "openai/gpt-4o-mini",
                        "cost_usd": "0.00000315",
                        "strategy": "cost",
                    },
                }
            ]
        }
    )
    id: str
    object: str = "chat.completion"
    created: int
    model: str = Field(description="The model that answered.")
    choices: list[CompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None
    llmqueue: LlmqueueExtension
