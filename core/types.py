"""The normalized request and response every provider adapter translates to and from.

One request shape (OpenAI's chat format, which most clients already speak) and one
response shape cross every boundary in llmqueue: the API validates into `ChatRequest`,
the job store keeps it as JSON, routing reads it to count tokens and check capabilities,
and each adapter in `workers/providers/` turns it into its SDK's call and its SDK's answer
back into `ChatResponse`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FinishReason(StrEnum):
    """The one set of finish reasons; adapters map their provider's onto it."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class ImageURL(BaseModel):
    url: str  # http(s) URL or a data: URL with base64 content
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """One part of a multimodal message: text or an image."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _part_has_its_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs 'image_url'")
        return self


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _roles_carry_what_they_need(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs 'tool_call_id'")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a {self.role} message needs 'content'")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        return self

    def text(self) -> str:
        """The message's text, its image parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(p.type == "image_url" for p in self.content)


class FunctionDefinition(BaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class JSONSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


class ChatRequest(BaseModel):
    """What to generate. `model` is filled in by routing before a provider sees it."""

    model_config = ConfigDict(extra="forbid")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None

    def required_capabilities(self) -> set[str]:
        """Capabilities a model must declare to serve this request."""
        caps: set[str] = set()
        if self.tools:
            caps.add("tools")
        if any(m.has_image() for m in self.messages):
            caps.add("vision")
        if self.response_format is not None:
            if self.response_format.type == "json_object":
                caps.add("json_mode")
            elif self.response_format.type == "json_schema":
                caps.add("json_schema")
        return caps


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


class ChatResponse(BaseModel):
    """What a provider answered, in one shape whichever provider it was."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Field(default_factory=Usage)
    provider_request_id: str | None = None
    rate_limit_headers: dict[str, str] = Field(default_factory=dict)
    model: str | None = None  # the model name the provider reported, when it did


RATE_LIMIT_HEADER_PREFIXES = (
    "x-ratelimit-",
    "x-ratelimitbysize-",  # Mistral's token limits
    "anthropic-ratelimit-",
    "retry-after",
    "x-ms-ratelimit-",
)


def pick_rate_limit_headers(headers: Any) -> dict[str, str]:
    """Keep only the rate-limit headers from a response's header mapping."""
    if headers is None:
        return {}
    picked: dict[str, str] = {}
    for key, value in headers.items():
        lower = str(key).lower()
        if lower.startswith(RATE_LIMIT_HEADER_PREFIXES):
            picked[lower] = str(value)
    return picked
