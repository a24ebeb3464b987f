"""Mistral's chat completions through the official `mistralai` SDK.

`MistralProvider` makes the call and reads the answer, its usage and its errors; the
request's translation (roles, tool-call ids Mistral accepts, JSON output, sampling) is
`mistral_request.py`.

The SDK's retries are off (a `none` retry strategy, no connection retries): the worker owns
retries. The SDK does not hand back response headers from `complete`, so the adapter's own
httpx client notes each response's headers (per asyncio task, in a context variable) for
the request id and rate-limit headers. The client is built once per deployment. Embeddings
(`embed`) are Mistral's embeddings API; their translation is in `mistral_embed.py`.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

import httpx2
from mistralai.client import Mistral, errors
from mistralai.client.utils.retries import BackoffStrategy, RetryConfig

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
from workers.providers.base import Target, TextSink, check_embedding_call
from workers.providers.errors import (
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
from workers.providers.mistral_embed import (
    MISTRAL_MAX_INPUTS,
    from_mistral_embeddings,
    to_mistral_embed_params,
)
from workers.providers.mistral_request import to_mistral_params

DEFAULT_URL = "https://api.mistral.ai"  # where the SDK calls when the deployment names no base_url

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "model_length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "error": FinishReason.ERROR,
}

NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), retry_connection_errors=False)

_response_headers: ContextVar[httpx2.Headers | None] = ContextVar("mistral_response_headers", default=None)


async def _note_headers(response: httpx2.Response) -> None:
    _response_headers.set(response.headers)


def _text(content: Any) -> str:
    """Mistral's content is a string or a list of chunks (text, thinking, ...): the text only."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(getattr(c, "text", "") for c in content if getattr(c, "type", "text") == "text")


def _arguments(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def usage_from_mistral(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)  # not in the SDK's model: a plain dict
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=cached or 0,
    )


def from_mistral_completion(completion: Any, headers: Any = None) -> ChatResponse:
    choice = completion.choices[0]
    message = choice.message
    calls = [
        ToolCall(
            id=c.id, function=FunctionCall(name=c.function.name, arguments=_arguments(c.function.arguments))
        )
        for c in (message.tool_calls if message is not None else None) or []
    ]
    return ChatResponse(
        text=_text(message.content) if message is not None else "",
        tool_calls=calls,
        finish_reason=FINISH_REASONS.get(str(choice.finish_reason), FinishReason.STOP),
        usage=usage_from_mistral(completion.usage),
        provider_request_id=completion.id,
        rate_limit_headers=pick_rate_limit_headers(headers),
        model=completion.model,
    )


def classify_mistral_error(
    status: int,
    body: dict[str, Any],
    fallback_message: str = "",
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
    validation: bool = False,
) -> ProviderError:
    """A Mistral error body (`message` or `detail`, `type`) with its HTTP status, as one of our
    error classes: the failure of a call, or of one line of a batch job. `validation`: the
    body is a request validation error (HTTP 422 with `detail`)."""
    raw_message = body.get("message") or body.get("detail") or fallback_message or f"HTTP {status}"
    message = raw_message if isinstance(raw_message, str) else json.dumps(raw_message)
    kind = str(body.get("type") or "")
    lowered = f"{kind} {message}".lower()
    args: dict[str, Any] = {"status_code": status, "provider_request_id": request_id}
    if status < 400:  # a 200 whose body could not be read
        return Transient(message, **args)
    if "quota" in lowered or "billing" in lowered or status == 402:
        return QuotaExhausted(message, **args)
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **args)
    if "context length" in lowered or "too large for model" in lowered:
        return ContextTooLong(message, **args)
    if "moderation" in lowered and status < 500:
        return ContentFiltered(message, **args)
    if validation:
        return InvalidRequest(message, **args)
    return status_error(status, message, retry_after=retry_after, request_id=request_id)


def map_mistral_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception the mistralai SDK (or its httpx2 transport) raises, as one of our error classes."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, httpx2.TransportError | errors.NoResponseError):  # anything else on the wire
        return Transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, errors.MistralError):
        status = exc.status_code
        request_id = exc.headers.get("mistral-correlation-id")
        retry_after = parse_retry_after(exc.headers.get("retry-after"))
        try:
            body = json.loads(exc.body)
        except (TypeError, ValueError):
            body = None
        body = body if isinstance(body, dict) else {}
        if not (body.get("message") or body.get("detail")) and exc.body:
            body = {**body, "message": exc.body}
        return classify_mistral_error(
            status,
            body,
            exc.message,
            retry_after=retry_after,
            request_id=request_id,
            validation=isinstance(exc, errors.HTTPValidationError),
        )
    if isinstance(exc, httpx2.HTTPError):
        return Transient(str(exc))
    raise exc


class MistralProvider:
    """Mistral's chat completions API."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.http = httpx2.AsyncClient(
            timeout=target.timeout_s, follow_redirects=True, event_hooks={"response": [_note_headers]}
        )
        self.client = Mistral(
            api_key=target.api_key,
            server_url=target.base_url,
            async_client=self.http,
            retry_config=NO_RETRIES,
            timeout_ms=int(target.timeout_s * 1000),
        )
        self.endpoint: str = self.target.base_url or DEFAULT_URL  # named in transport errors

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        params = to_mistral_params(request, self.target.deployment.provider_model)
        try:
            if on_text is None:
                _response_headers.set(None)
                completion = await self.client.chat.complete_async(**params)
                return from_mistral_completion(completion, _response_headers.get())
            return await self._stream(params, on_text)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_mistral_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def _stream(self, params: dict[str, Any], on_text: TextSink) -> ChatResponse:
        stream = await self.client.chat.stream_async(**params)
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish = "stop"
        usage: Any = None
        request_id = model = None
        async with stream:
            async for event in stream:
                chunk = event.data
                request_id, model = request_id or chunk.id, model or chunk.model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    piece = _text(choice.delta.content)
                    if piece:
                        text.append(piece)
                        await on_text(piece)
                    for i, tc in enumerate(choice.delta.tool_calls or []):
                        slot = calls.setdefault(tc.index or i, {"id": "", "name": "", "arguments": ""})
                        if tc.id and tc.id != "null":
                            slot["id"] = tc.id
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += _arguments(tc.function.arguments)
                    if choice.finish_reason:
                        finish = str(choice.finish_reason)
        return ChatResponse(
            text="".join(text),
            tool_calls=[
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                for _, c in sorted(calls.items())
            ],
            finish_reason=FINISH_REASONS.get(finish, FinishReason.STOP),
            usage=usage_from_mistral(usage),
            provider_request_id=request_id,
            rate_limit_headers=pick_rate_limit_headers(stream.response.headers),
            model=model,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        check_embedding_call(self.target, request, MISTRAL_MAX_INPUTS)
        params = to_mistral_embed_params(request, self.target.deployment.provider_model)
        try:
            _response_headers.set(None)
            response = await self.client.embeddings.create_async(**params)
            return from_mistral_embeddings(response, _response_headers.get(), request)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_mistral_error(exc) from exc

    async def aclose(self) -> None:
        await self.http.aclose()
