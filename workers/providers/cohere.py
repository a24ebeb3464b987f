"""Cohere's v2 Chat and Embed APIs through the official `cohere` SDK (`AsyncClientV2`).

`CohereProvider` owns the translation between our OpenAI-shaped request and Cohere's v2
chat: the message roles carry over (developer becomes system), tool calls and tool results
keep OpenAI's shape, `json_object` and `json_schema` both become Cohere's `json_object`
response format (with the schema when there is one), `stop` becomes `stop_sequences` and
`top_p` becomes `p`. Cohere cannot force one named tool, so a named `tool_choice` offers
only that tool with `REQUIRED`. Image parts are passed as Cohere's `image_url` content; the
command models in the catalog have no vision and the API refuses them (InvalidRequest).

Usage is read from `billed_units` (what Cohere charges for), falling back to `tokens`.
Embeddings (`embed`) are Cohere's v2 Embed API; their translation is in `cohere_embed.py`.
The SDK's retries are off (`max_retries=0`): the worker owns retries. The SDK has no
aiohttp transport without an extra package, so it runs on its own httpx client, which this
adapter builds once per deployment and closes in `aclose`.
"""

from __future__ import annotations

from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError

from core.embeddings import EmbeddingRequest, EmbeddingResponse
from core.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    FunctionCall,
    Message,
    ToolCall,
    Usage,
    pick_rate_limit_headers,
)
from workers.providers.base import Target, TextSink, check_embedding_call, openai_style_content
from workers.providers.cohere_embed import COHERE_MAX_INPUTS, from_cohere_embed, to_cohere_embed_params
from workers.providers.errors import (
    AuthError,
    ContentFiltered,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Transient,
    parse_retry_after,
    status_error,
    transport_error,
)

DEFAULT_URL = "https://api.cohere.com"  # where the SDK calls when the deployment names no base_url

FINISH_REASONS = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "ERROR_LIMIT": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
    "ERROR_TOXIC": FinishReason.CONTENT_FILTER,
    "ERROR": FinishReason.ERROR,
    "TIMEOUT": FinishReason.ERROR,
}

# Cohere's own call-limit headers, kept alongside the standard rate-limit ones.
COHERE_LIMIT_HEADERS = ("x-trial-endpoint-call-", "x-endpoint-monthly-call-")


def _message(message: Message) -> dict[str, Any]:
    if message.role in ("system", "developer"):
        return {"role": "system", "content": message.text()}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant"}
        if message.text():
            out["content"] = message.text()
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in message.tool_calls
            ]
        return out
    return {"role": "user", "content": openai_style_content(message)}


def to_cohere_params(request: ChatRequest, model: str) -> dict[str, Any]:
    """Our request as keyword arguments for `chat` / `chat_stream`."""
    params: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
    tools = request.tools or []
    choice = request.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t.function.name == name] or tools
        choice = "required"
    if tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.function.name,
                    "description": t.function.description or "",
                    "parameters": t.function.parameters,
                },
            }
            for t in tools
        ]
        if choice in ("required", "none"):
            params["tool_choice"] = str(choice).upper()
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        params["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        params["response_format"] = {"type": "json_object", "json_schema": fmt.json_schema.schema_}
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    if request.stop:
        params["stop_sequences"] = request.stop
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["p"] = min(max(request.top_p, 0.01), 0.99)  # Cohere's accepted range
    if request.seed is not None:
        params["seed"] = request.seed
    return params


def usage_from_cohere(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    counted = usage.billed_units or usage.tokens
    return Usage(
        input_tokens=int(getattr(counted, "input_tokens", None) or 0),
        output_tokens=int(getattr(counted, "output_tokens", None) or 0),
        cached_input_tokens=int(usage.cached_tokens or 0),
    )


def pick_cohere_headers(headers: Any) -> dict[str, str]:
    picked = pick_rate_limit_headers(headers)
    for key, value in (headers or {}).items():
        if str(key).lower().startswith(COHERE_LIMIT_HEADERS):
            picked[str(key).lower()] = str(value)
    return picked


def from_cohere_chat(response: Any, headers: Any, model: str) -> ChatResponse:
    message = response.message
    text = "".join(item.text for item in message.content or [] if getattr(item, "type", "") == "text")
    calls = [
        ToolCall(
            id=c.id, function=FunctionCall(name=c.function.name or "", arguments=c.function.arguments or "{}")
        )
        for c in message.tool_calls or []
        if c.function is not None
    ]
    return ChatResponse(
        text=text,
        tool_calls=calls,
        finish_reason=FINISH_REASONS.get(str(response.finish_reason), FinishReason.STOP),
        usage=usage_from_cohere(response.usage),
        provider_request_id=response.id,
        rate_limit_headers=pick_cohere_headers(headers),
        model=model,  # Cohere does not report the model it used
    )


def map_cohere_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception the cohere SDK (or its httpx transport) raises, as one of our error classes."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, httpx.TransportError):  # anything else on the wire
        return Transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ApiError):
        status = exc.status_code
        headers = exc.headers or {}
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str(body.get("message") or exc.body or f"HTTP {status}")
        request_id = str(body.get("id") or headers.get("x-debug-trace-id") or "") or None
        retry_after = parse_retry_after(headers.get("retry-after"))
        lowered = message.lower()
        args: dict[str, Any] = {"status_code": status, "provider_request_id": request_id}
        if status is None:
            return Transient(message, **args)
        if status == 429 and ("/ month" in lowered or "quota" in lowered or "billing" in lowered):
            return QuotaExhausted(message, **args)
        if status == 429:
            return RateLimited(message, retry_after=retry_after, **args)
        if status == 498:  # Cohere's invalid token
            return AuthError(message, **args)
        if status < 500 and ("blocked" in lowered or "usage policy" in lowered):
            return ContentFiltered(message, **args)
        return status_error(status, message, retry_after=retry_after, request_id=request_id)
    if isinstance(exc, httpx.HTTPError):
        return Transient(str(exc))
    raise exc


class CohereProvider:
    """Cohere's v2 Chat API."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.http = httpx.AsyncClient(timeout=target.timeout_s, follow_redirects=True)
        self.client = cohere.AsyncClientV2(
            api_key=target.api_key,
            base_url=target.base_url,
            timeout=target.timeout_s,
            max_retries=0,
            httpx_client=self.http,
            log_warning_experimental_features=False,
        )
        self.endpoint: str = self.target.base_url or DEFAULT_URL  # named in transport errors

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        model = self.target.deployment.provider_model
        params = to_cohere_params(request, model)
        try:
            if on_text is None:
                raw: Any = await self.client.with_raw_response.chat(**params)
                return from_cohere_chat(raw.data, raw.headers, model)
            return await self._stream(params, on_text)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_cohere_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def _stream(self, params: dict[str, Any], on_text: TextSink) -> ChatResponse:
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: Any = "COMPLETE"
        usage: Any = None
        response_id = None
        async with self.client.with_raw_response.chat_stream(**params) as raw:
            headers = raw.headers
            events: Any = raw.data  # the SDK's event union, read field by field below
            async for event in events:
                if event.type == "message-start":
                    response_id = event.id
                elif event.type == "content-delta":
                    piece = event.delta.message.content.text if event.delta and event.delta.message else None
                    if piece:
                        text.append(piece)
                        await on_text(piece)
                elif event.type == "tool-call-start" and event.delta and event.delta.message:
                    call = event.delta.message.tool_calls
                    calls[event.index or 0] = {
                        "id": call.id,
                        "name": call.function.name or "",
                        "arguments": call.function.arguments or "",
                    }
                elif event.type == "tool-call-delta" and event.delta and event.delta.message:
                    fn = event.delta.message.tool_calls.function
                    calls[event.index or 0]["arguments"] += fn.arguments or ""
                elif event.type == "message-end" and event.delta:
                    finish = event.delta.finish_reason or finish
                    usage = event.delta.usage
        return ChatResponse(
            text="".join(text),
            tool_calls=[
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"] or "{}"))
                for _, c in sorted(calls.items())
            ],
            finish_reason=FINISH_REASONS.get(str(finish), FinishReason.STOP),
            usage=usage_from_cohere(usage),
            provider_request_id=response_id,
            rate_limit_headers=pick_cohere_headers(headers),
            model=params["model"],
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        check_embedding_call(self.target, request, COHERE_MAX_INPUTS)
        model = self.target.deployment.provider_model
        try:
            raw: Any = await self.client.with_raw_response.embed(**to_cohere_embed_params(request, model))
            return from_cohere_embed(raw.data, pick_cohere_headers(raw.headers), request, model)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_cohere_error(exc) from exc

    async def aclose(self) -> None:
        await self.http.aclose()
