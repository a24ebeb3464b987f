"""OpenAI chat completions and embeddings through the official `openai` SDK, and every
endpoint speaking them.

`OpenAIProvider` owns the translation for the OpenAI wire format, chat and embeddings; Azure
OpenAI, Ollama and custom OpenAI-compatible endpoints (`azure.py`, `ollama.py`) differ only in
how the client is built (and in asking compatible servers for float vectors). The SDK's
retries are off (`max_retries=0`): the worker owns retries. The client uses the SDK's aiohttp
transport, measured here at less than half the CPU per call of the default one, and is built
once per deployment by the worker's client cache.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx2
import openai
from openai.types.chat import ChatCompletion

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
from workers.providers.base import (
    Target,
    TextSink,
    check_embedding_call,
    estimated_usage,
    vectors_in_order,
)
from workers.providers.errors import (
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Transient,
    parse_retry_after,
    status_error,
    transport_error,
)

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def to_openai_params(request: ChatRequest, model: str) -> dict[str, Any]:
    """Our request in OpenAI's shape (it is OpenAI's shape already, minus unset fields)."""
    params = request.model_dump(exclude_none=True, by_alias=True)
    params["model"] = model
    return params


def from_openai_completion(completion: Any, headers: Any = None) -> ChatResponse:
    choice = completion.choices[0]
    message = choice.message
    tool_calls = [
        ToolCall(id=tc.id, function=FunctionCall(name=tc.function.name, arguments=tc.function.arguments))
        for tc in (message.tool_calls or [])
    ]
    return ChatResponse(
        text=message.content or "",
        tool_calls=tool_calls,
        finish_reason=FINISH_REASONS.get(choice.finish_reason or "stop", FinishReason.STOP),
        usage=usage_from_openai(completion.usage),
        provider_request_id=getattr(completion, "id", None),
        rate_limit_headers=pick_rate_limit_headers(headers),
        model=getattr(completion, "model", None),
    )


def usage_from_openai(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=(getattr(prompt_details, "cached_tokens", None) or 0) if prompt_details else 0,
        reasoning_tokens=(getattr(completion_details, "reasoning_tokens", None) or 0)
        if completion_details
        else 0,
    )


# "any array must be 2048 dimensions or less" (OpenAI, Azure OpenAI, and the compatible servers).
OPENAI_MAX_INPUTS = 2048


def from_openai_embeddings(
    response: Any, headers: Any, request: EmbeddingRequest, provider: str
) -> EmbeddingResponse:
    usage = getattr(response, "usage", None)
    reported = getattr(usage, "prompt_tokens", None) if usage is not None else None
    return EmbeddingResponse(
        vectors=vectors_in_order(((d.index, d.embedding) for d in response.data), len(request.inputs)),
        usage=Usage(input_tokens=reported) if reported is not None else estimated_usage(request, provider),
        usage_estimated=reported is None,
        provider_request_id=(headers or {}).get("x-request-id"),
        rate_limit_headers=pick_rate_limit_headers(headers),
        model=getattr(response, "model", None),
    )


def classify_openai_error(
    status: int,
    error: dict[str, Any],
    fallback_message: str = "",
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> ProviderError:
    """An OpenAI error body's `error` object (`code`, `message`) with its HTTP status, as one of
    our error classes: the failure of a call, or of one line of a batch."""
    code = str(error.get("code") or "")
    message = str(error.get("message") or fallback_message or f"HTTP {status}")
    if code == "insufficient_quota":
        return QuotaExhausted(message, status_code=status, provider_request_id=request_id)
    if code == "context_length_exceeded":
        return ContextTooLong(message, status_code=status, provider_request_id=request_id)
    if code == "content_filter" or code == "content_policy_violation":
        return ContentFiltered(message, status_code=status, provider_request_id=request_id)
    if status == 429:
        return RateLimited(message, status_code=429, retry_after=retry_after, provider_request_id=request_id)
    return status_error(status, message, retry_after=retry_after, request_id=request_id)


def map_openai_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception the openai SDK raises, as one of our error classes."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        request_id = headers.get("x-request-id")
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is None and headers.get("retry-after-ms"):
            ms = parse_retry_after(headers.get("retry-after-ms"))
            retry_after = ms / 1000 if ms is not None else None
        body = exc.body if isinstance(exc.body, dict) else {}
        return classify_openai_error(
            exc.status_code, body, exc.message, retry_after=retry_after, request_id=request_id
        )
    if isinstance(exc, openai.OpenAIError):
        return Transient(str(exc))
    raise exc


class OpenAIProvider:
    """OpenAI's chat completions and embeddings APIs."""

    # None: the SDK asks for base64 vectors (a third of the bytes of JSON floats) and decodes
    # them itself; compatible servers may not speak base64, so they are asked for floats.
    embedding_encoding: Literal["float"] | None = None

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = self.build_client(target)
        self.endpoint: str = str(self.client.base_url)  # named in transport errors

    def build_client(self, target: Target) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=target.api_key,
            base_url=target.base_url,
            max_retries=0,
            timeout=target.timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=target.timeout_s),
        )

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        params = to_openai_params(request, self.target.deployment.provider_model)
        try:
            if on_text is None:
                # The SDK's own route for a body it need not reshape (`client.post`: its
                # transport, auth and errors): `chat.completions.create` first walks the body
                # through its TypedDict transform, about a fifth of a provider worker's CPU per
                # call here, and ours is OpenAI's JSON already (tests/unit/test_openai_body.py
                # holds that the transform leaves it unchanged). The answer is parsed as the
                # SDK parses it (`construct`, lenient with compatible servers).
                response = await self.client.post("/chat/completions", cast_to=httpx2.Response, body=params)
                return from_openai_completion(ChatCompletion.construct(**response.json()), response.headers)
            return await self._stream(params, on_text)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_openai_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def _stream(self, params: dict[str, Any], on_text: TextSink) -> ChatResponse:
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        raw = await self.client.chat.completions.with_raw_response.create(**params)
        stream = raw.parse()
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish = "stop"
        usage: Any = None
        request_id = None
        model = None
        async for chunk in stream:
            request_id = request_id or chunk.id
            model = model or chunk.model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    await on_text(delta.content)
                for tc in delta.tool_calls or []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    if tc.id:
                        slot["id"] = tc.id
                    if tc.function and tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function and tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
                if choice.finish_reason:
                    finish = choice.finish_reason
        return ChatResponse(
            text="".join(text),
            tool_calls=[
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                for _, c in sorted(calls.items())
            ],
            finish_reason=FINISH_REASONS.get(finish, FinishReason.STOP),
            usage=usage_from_openai(usage),
            provider_request_id=request_id,
            rate_limit_headers=pick_rate_limit_headers(raw.headers),
            model=model,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        check_embedding_call(self.target, request, OPENAI_MAX_INPUTS)
        params: dict[str, Any] = {"model": self.target.deployment.provider_model, "input": request.inputs}
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        if self.embedding_encoding is not None:
            params["encoding_format"] = self.embedding_encoding
        try:
            raw = await self.client.embeddings.with_raw_response.create(**params)
            return from_openai_embeddings(raw.parse(), raw.headers, request, self.target.deployment.provider)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_openai_error(exc) from exc

    async def aclose(self) -> None:
        await self.client.close()
