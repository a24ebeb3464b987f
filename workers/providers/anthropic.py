"""Anthropic's Messages API through the official `anthropic` SDK.

`AnthropicProvider` makes the call and reads the answer, its usage and its errors; the
request's translation (system prompt, tool blocks, images, JSON output) is
`anthropic_request.py`. `max_tokens` is required by the API and defaults to the model's
output limit from the catalog. `seed` has no Anthropic equivalent and is dropped. Anthropic
has no embeddings API: `embed` raises InvalidRequest saying so.

The SDK's retries are off (`max_retries=0`): the worker owns retries. The client uses the
SDK's aiohttp transport, as the OpenAI adapter does, and is built once per deployment.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import anthropic

from core.embeddings import EmbeddingRequest, EmbeddingResponse
from core.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    FunctionCall,
    ToolCall,
    Usage,
    pick_rate_limit_headers,
)
from workers.providers.anthropic_request import to_anthropic_params
from workers.providers.base import Target, TextSink, no_embeddings
from workers.providers.errors import (
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Transient,
    parse_retry_after,
    status_error,
    transport_error,
)

FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


def usage_from_anthropic(usage: Any) -> Usage:
    """Anthropic's `input_tokens` leaves out cached tokens; ours counts every prompt token."""
    if usage is None:
        return Usage()
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    return Usage(
        input_tokens=(getattr(usage, "input_tokens", None) or 0) + cache_read + cache_write,
        output_tokens=getattr(usage, "output_tokens", None) or 0,
        cached_input_tokens=cache_read,
    )


def from_anthropic_message(message: Any, headers: Any = None) -> ChatResponse:
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            call = FunctionCall(name=block.name, arguments=json.dumps(block.input))
            calls.append(ToolCall(id=block.id, function=call))
    return ChatResponse(
        text="".join(text),
        tool_calls=calls,
        finish_reason=FINISH_REASONS.get(message.stop_reason or "end_turn", FinishReason.STOP),
        usage=usage_from_anthropic(message.usage),
        provider_request_id=(headers.get("request-id") if headers is not None else None) or message.id,
        rate_limit_headers=pick_rate_limit_headers(headers),
        model=message.model,
    )


def _counts(usage: Any) -> dict[str, int]:
    """The token counts a streamed usage object carries (message_start, then message_delta)."""
    return {k: v for k, v in usage.model_dump().items() if isinstance(v, int) and not isinstance(v, bool)}


# The HTTP status of each error type Anthropic documents (docs.anthropic.com, api/errors): a
# batch's errored request carries the type but no status.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def classify_anthropic_error(
    kind: str,
    message: str,
    status: int | None = None,
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> ProviderError:
    """An Anthropic error (its `type` and message, and the HTTP status when there was one) as one
    of our error classes: the failure of a call, or of one request of a message batch."""
    status = status if status is not None else ERROR_STATUS.get(kind, 500)
    lowered = message.lower()
    args: dict[str, Any] = {"status_code": status, "provider_request_id": request_id}
    if kind == "billing_error" or "credit balance" in lowered:
        return QuotaExhausted(message, **args)
    if "prompt is too long" in lowered:
        return ContextTooLong(message, **args)
    if "content filtering" in lowered:
        return ContentFiltered(message, **args)
    if kind in ("authentication_error", "permission_error"):
        return AuthError(message, **args)
    if kind == "rate_limit_error" or status == 429:
        return RateLimited(message, retry_after=retry_after, **args)
    if kind in ("overloaded_error", "api_error", "timeout_error") or status >= 500:
        return Transient(message, retry_after=retry_after, **args)
    return status_error(status, message, retry_after=retry_after, request_id=request_id)


def map_anthropic_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception the anthropic SDK raises, as one of our error classes."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, anthropic.APIStatusError):
        headers = exc.response.headers
        request_id = exc.request_id
        retry_after = parse_retry_after(headers.get("retry-after"))
        message = str(exc.api_message or exc.message)
        return classify_anthropic_error(
            str(exc.type or ""), message, exc.status_code, retry_after=retry_after, request_id=request_id
        )
    if isinstance(exc, ValueError):  # the SDK's own argument checks
        return InvalidRequest(str(exc))
    if isinstance(exc, anthropic.AnthropicError):
        return Transient(str(exc))
    raise exc


class AnthropicProvider:
    """Anthropic's Messages API."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = anthropic.AsyncAnthropic(
            api_key=target.api_key,
            base_url=target.base_url,
            max_retries=0,
            timeout=target.timeout_s,
            http_client=anthropic.DefaultAioHttpClient(timeout=target.timeout_s),
        )
        self.endpoint: str = str(self.client.base_url)  # named in transport errors

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        dep = self.target.deployment
        try:
            params = to_anthropic_params(request, dep.provider_model, dep.model.max_output_tokens)
            if on_text is None:
                raw = await self.client.messages.with_raw_response.create(**params)
                return from_anthropic_message(await raw.parse(), raw.headers)
            return await self._stream(params, on_text)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_anthropic_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def _stream(self, params: dict[str, Any], on_text: TextSink) -> ChatResponse:
        raw = await self.client.messages.with_raw_response.create(**params, stream=True)
        stream: Any = await raw.parse()
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        stop_reason = "end_turn"
        usage: dict[str, int] = {}
        message_id = model = None
        async for event in stream:
            if event.type == "message_start":
                message_id, model = event.message.id, event.message.model
                usage.update(_counts(event.message.usage))
            elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                block = event.content_block
                calls[event.index] = {"id": block.id, "name": block.name, "arguments": ""}
            elif event.type == "content_block_delta":
                if event.delta.type == "text_delta":
                    text.append(event.delta.text)
                    await on_text(event.delta.text)
                elif event.delta.type == "input_json_delta" and event.index in calls:
                    calls[event.index]["arguments"] += event.delta.partial_json
            elif event.type == "message_delta":
                stop_reason = event.delta.stop_reason or stop_reason
                usage.update(_counts(event.usage))  # cumulative: the last one counts
        return ChatResponse(
            text="".join(text),
            tool_calls=[
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                for _, c in sorted(calls.items())
            ],
            finish_reason=FINISH_REASONS.get(stop_reason, FinishReason.STOP),
            usage=usage_from_anthropic(SimpleNamespace(**usage)),
            provider_request_id=raw.headers.get("request-id") or message_id,
            rate_limit_headers=pick_rate_limit_headers(raw.headers),
            model=model,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise no_embeddings(self.target)

    async def aclose(self) -> None:
        await self.client.close()
