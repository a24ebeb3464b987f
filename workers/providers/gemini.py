"""Google Gemini (the Gemini Developer API) through the `google-genai` SDK's async client.

The request's translation into Gemini's `contents` is in `gemini_request.py`. Answers come
back from `candidates[0]` and `usage_metadata` (thinking tokens count as output, as OpenAI
counts reasoning tokens). A blocked prompt or a safety stop with nothing generated
raises `ContentFiltered`. The SDK's retries are off (`HttpRetryOptions(attempts=1)`) and its
timeout set; the worker owns retries.

Embeddings (`embed`) are `models.embed_content`; their translation is in `gemini_embed.py`.

Not carried: Gemini's thought signatures on function calls (our `ToolCall` has no slot for
them; Gemini 2.5 does not require them back).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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
    AuthError,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Transient,
    status_error,
    transport_error,
)
from workers.providers.gemini_embed import GEMINI_MAX_INPUTS, from_gemini_embeddings, to_gemini_embed_config
from workers.providers.gemini_request import GENERATED_ID_PREFIX, to_gemini_config, to_gemini_contents

DEFAULT_URL = (
    "https://generativelanguage.googleapis.com"  # where the SDK calls when the deployment names no base_url
)
FILTER_REASONS = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    **{reason: FinishReason.CONTENT_FILTER for reason in FILTER_REASONS},
}
CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count", "too long", "context length")


def usage_from_gemini(meta: Any) -> Usage:
    if meta is None:
        return Usage()
    thoughts = meta.thoughts_token_count or 0
    return Usage(
        input_tokens=(meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0),
        output_tokens=(meta.candidates_token_count or 0) + thoughts,
        cached_input_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
    )


def _finish(reason: Any, text: str, calls: list[ToolCall], request_id: str | None) -> FinishReason:
    name = str(getattr(reason, "value", reason) or "STOP")
    if name in FILTER_REASONS and not text and not calls:
        raise ContentFiltered(f"Gemini stopped on content policy: {name}", provider_request_id=request_id)
    if calls and name == "STOP":
        return FinishReason.TOOL_CALLS
    return FINISH_REASONS.get(name, FinishReason.ERROR)


class Collected:
    """Gemini responses (one, or a stream's chunks) folded into one `ChatResponse`."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: list[ToolCall] = []
        self.finish: Any = None
        self.usage: Any = None
        self.request_id: str | None = None
        self.model: str | None = None
        self.headers: Any = None

    def add(self, response: Any) -> list[str]:
        """Fold in one response; returns its text deltas. A blocked prompt raises ContentFiltered."""
        self.request_id = self.request_id or response.response_id
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None and not response.candidates:
            reason = getattr(feedback.block_reason, "value", feedback.block_reason)
            raise ContentFiltered(f"Gemini blocked the prompt: {reason}", provider_request_id=self.request_id)
        self.model = self.model or response.model_version
        if self.headers is None and response.sdk_http_response is not None:
            self.headers = response.sdk_http_response.headers
        self.usage = response.usage_metadata or self.usage
        deltas: list[str] = []
        for candidate in (response.candidates or [])[:1]:
            self.finish = candidate.finish_reason or self.finish
            for part in (candidate.content.parts or []) if candidate.content else []:
                if part.function_call is not None:
                    fc = part.function_call
                    call_id = fc.id or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:20]}"
                    arguments = json.dumps(fc.args or {})
                    self.calls.append(
                        ToolCall(id=call_id, function=FunctionCall(name=fc.name or "", arguments=arguments))
                    )
                elif part.text and not part.thought:
                    deltas.append(part.text)
        self.text.extend(deltas)
        return deltas

    def result(self) -> ChatResponse:
        text = "".join(self.text)
        return ChatResponse(
            text=text,
            tool_calls=self.calls,
            finish_reason=_finish(self.finish, text, self.calls, self.request_id),
            usage=usage_from_gemini(self.usage),
            provider_request_id=self.request_id,
            rate_limit_headers=pick_rate_limit_headers(self.headers),
            model=self.model,
        )


def from_gemini_response(response: Any) -> ChatResponse:
    collected = Collected()
    collected.add(response)
    return collected.result()


def _details(details: Any) -> list[dict[str, Any]]:
    """The `error.details` list of a Google error body (RetryInfo, QuotaFailure, ErrorInfo...)."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    found = error.get("details") if isinstance(error, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    for detail in details:
        match = re.fullmatch(r"([0-9.]+)s", str(detail.get("retryDelay", "")))
        if match:
            return float(match.group(1))
    return None


def _is_daily_quota(message: str, details: list[dict[str, Any]]) -> bool:
    quota_ids = [str(v.get("quotaId", "")) for d in details for v in d.get("violations") or []]
    return "billing" in message.lower() or any("PerDay" in q for q in quota_ids)


def classify_gemini_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> ProviderError:
    """A Google error (HTTP code, status name, message, `details`) as one of our error classes:
    the failure of a call, or of one request of a batch."""
    lowered = message.lower()
    details = details or []
    if code == 429 or status == "RESOURCE_EXHAUSTED":
        if _is_daily_quota(message, details):
            return QuotaExhausted(message, status_code=code)
        return RateLimited(message, status_code=code, retry_after=_retry_delay(details))
    if (
        status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or "api key not valid" in lowered
        or any(d.get("reason") == "API_KEY_INVALID" for d in details)
    ):
        return AuthError(message, status_code=code)
    if code == 400 and any(hint in lowered for hint in CONTEXT_HINTS):
        return ContextTooLong(message, status_code=code)
    if status == "FAILED_PRECONDITION" and "billing" in lowered:
        return QuotaExhausted(message, status_code=code)
    return status_error(code or 500, message)


def map_gemini_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception the google-genai SDK (or its HTTP transport) raises, as one of our errors."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, genai_errors.APIError):
        return classify_gemini_error(
            int(exc.code or 0), str(exc.status or ""), str(exc.message or exc), _details(exc.details)
        )
    if isinstance(exc, genai_errors.UnknownApiResponseError):
        return Transient(f"unreadable response: {exc}")
    if isinstance(exc, pydantic.ValidationError):
        return InvalidRequest(f"request rejected by the SDK: {exc}")
    raise exc


class GeminiProvider:
    """Gemini's `generateContent` / `streamGenerateContent`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = self.build_client(target)
        self.endpoint: str = self.target.base_url or DEFAULT_URL  # named in transport errors

    def build_client(self, target: Target) -> genai.Client:
        options = types.HttpOptions(
            base_url=target.base_url,
            api_version="v1beta",
            timeout=int(target.timeout_s * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=target.api_key, vertexai=False, http_options=options)

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        model = self.target.deployment.provider_model
        try:
            contents, system = to_gemini_contents(request)
            config = to_gemini_config(request, system)
            if on_text is None:
                response = await self.client.aio.models.generate_content(
                    model=model, contents=contents, config=config
                )
                return from_gemini_response(response)
            collected = Collected()
            stream = await self.client.aio.models.generate_content_stream(
                model=model, contents=contents, config=config
            )
            async for chunk in stream:
                for delta in collected.add(chunk):
                    await on_text(delta)
            return collected.result()
        except ProviderError:
            raise
        except Exception as exc:
            raise map_gemini_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        check_embedding_call(self.target, request, GEMINI_MAX_INPUTS)
        try:
            response = await self.client.aio.models.embed_content(
                model=self.target.deployment.provider_model,
                contents=list(request.inputs),
                config=to_gemini_embed_config(request),
            )
            return from_gemini_embeddings(response, request)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_gemini_error(exc) from exc

    async def aclose(self) -> None:
        await self.client.aio.aclose()
