"""AWS Bedrock through boto3's `bedrock-runtime` Converse and ConverseStream APIs.

The request's translation into Converse is in `bedrock_request.py`. boto3 is
synchronous, so every call runs on this adapter's own thread pool, and a stream is read one
event per hop so each text delta reaches `on_text` as it arrives. The client is built once,
with botocore's retries off (`total_max_attempts=1`) and its timeouts set. Against the
emulator it gets dummy credentials and `endpoint_url`; otherwise the default AWS credential
chain and the deployment's region. Embeddings (`embed`) go through InvokeModel with each
embedding model's own body; their translation is in `bedrock_embed.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config

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
from workers.providers.bedrock_embed import (
    BEDROCK_MAX_INPUTS,
    embedding_body,
    embedding_family,
    from_bedrock_embedding,
    invoke_and_read,
)
from workers.providers.bedrock_request import to_bedrock_params
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

T = TypeVar("T")
MAX_CONCURRENCY = 64  # threads, and botocore's connection pool, per deployment
_END = object()

FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "content_filtered": FinishReason.CONTENT_FILTER,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
}
TRANSIENT = {
    *("ServiceUnavailableException", "InternalServerException", "ModelNotReadyException"),
    *("ModelTimeoutException", "ModelStreamErrorException", "ModelErrorException", "InternalFailure"),
}
AUTH = {
    *("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"),
    *("ExpiredTokenException", "MissingAuthenticationTokenException", "IncompleteSignatureException"),
}
CONTEXT_HINTS = ("too long", "too many tokens", "too many input tokens", "context window", "context length")
FILTER_HINTS = ("content filter", "blocked by", "content policy")


def usage_from_bedrock(usage: dict[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    cache_read = usage.get("cacheReadInputTokens") or 0
    cache_write = usage.get("cacheWriteInputTokens") or 0
    return Usage(
        input_tokens=(usage.get("inputTokens") or 0) + cache_read + cache_write,
        output_tokens=usage.get("outputTokens") or 0,
        cached_input_tokens=cache_read,
    )


def _finish(
    stop_reason: str | None, text: str, calls: list[ToolCall], request_id: str | None
) -> FinishReason:
    finish = FINISH_REASONS.get(stop_reason or "end_turn", FinishReason.ERROR)
    if finish is FinishReason.CONTENT_FILTER and not text and not calls:
        raise ContentFiltered(
            f"Bedrock stopped on content policy: {stop_reason}", provider_request_id=request_id
        )
    return finish


def from_bedrock_response(response: dict[str, Any], model_id: str) -> ChatResponse:
    meta = response.get("ResponseMetadata") or {}
    blocks = ((response.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in blocks if "text" in b)
    calls = [
        ToolCall(
            id=b["toolUse"]["toolUseId"],
            function=FunctionCall(name=b["toolUse"]["name"], arguments=json.dumps(b["toolUse"].get("input"))),
        )
        for b in blocks
        if "toolUse" in b
    ]
    return ChatResponse(
        text=text,
        tool_calls=calls,
        finish_reason=_finish(response.get("stopReason"), text, calls, meta.get("RequestId")),
        usage=usage_from_bedrock(response.get("usage")),
        provider_request_id=meta.get("RequestId"),
        rate_limit_headers=pick_rate_limit_headers(meta.get("HTTPHeaders")),
        model=model_id,
    )


def map_bedrock_error(
    exc: Exception, *, url: str | None = None, timeout_s: float | None = None
) -> ProviderError:
    """Any exception boto3/botocore raises for a Converse call, as one of our error classes."""
    transport = transport_error(exc, url=url, timeout_s=timeout_s)
    if transport is not None:
        return transport
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error") or {}
        meta = exc.response.get("ResponseMetadata") or {}
        raw_code = str(error.get("Code") or "")
        code = raw_code[:1].upper() + raw_code[1:]  # stream exception events are camelCase
        message = str(error.get("Message") or exc)
        status = meta.get("HTTPStatusCode")
        request_id = meta.get("RequestId")
        lowered = message.lower()
        kw: dict[str, Any] = {"status_code": status, "provider_request_id": request_id}
        if code == "ThrottlingException":
            headers = meta.get("HTTPHeaders") or {}
            return RateLimited(message, retry_after=parse_retry_after(headers.get("retry-after")), **kw)
        if code in TRANSIENT:
            return Transient(message, **kw)
        if code in AUTH:
            return AuthError(message, **kw)
        if code == "ServiceQuotaExceededException":
            return QuotaExhausted(message, **kw)
        if code == "ValidationException":
            if any(hint in lowered for hint in CONTEXT_HINTS):
                return ContextTooLong(message, **kw)
            if any(hint in lowered for hint in FILTER_HINTS):
                return ContentFiltered(message, **kw)
            return InvalidRequest(message, **kw)
        return status_error(status or 500, message, request_id=request_id)
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return AuthError(f"no usable AWS credentials: {exc}")
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return InvalidRequest(f"request rejected by botocore: {exc}")
    if isinstance(exc, json.JSONDecodeError):
        return Transient(f"Bedrock streamed malformed tool input: {exc}")
    if isinstance(exc, (botocore.exceptions.BotoCoreError, ConnectionError, TimeoutError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    raise exc


class BedrockProvider:
    """Bedrock Runtime's Converse / ConverseStream."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.model_id = target.deployment.provider_model
        self.executor = ThreadPoolExecutor(max_workers=MAX_CONCURRENCY, thread_name_prefix="bedrock")
        self.client = self.build_client(target)
        self.endpoint: str = self.client.meta.endpoint_url  # named in transport errors

    def build_client(self, target: Target) -> Any:
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=min(10.0, target.timeout_s),
            read_timeout=target.timeout_s,
            max_pool_connections=MAX_CONCURRENCY,
        )
        region = target.deployment.spec.region
        if target.emulated:
            session = boto3.session.Session(
                aws_access_key_id="emulator",
                aws_secret_access_key=target.api_key or "emulator",
                region_name=region or "us-east-1",
            )
            return session.client("bedrock-runtime", endpoint_url=target.base_url, config=config)
        session = boto3.session.Session(region_name=region)
        return session.client("bedrock-runtime", endpoint_url=target.base_url, config=config)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        try:
            params = await self._run(to_bedrock_params, request, self.model_id, self.target.timeout_s)
            if on_text is None:
                response = await self._run(lambda: self.client.converse(**params))
                return from_bedrock_response(response, self.model_id)
            return await self._stream(params, on_text)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_bedrock_error(exc, url=self.endpoint, timeout_s=self.target.timeout_s) from exc

    async def _stream(self, params: dict[str, Any], on_text: TextSink) -> ChatResponse:
        """Read ConverseStream one event per thread hop, then answer as Converse would have."""
        response = await self._run(lambda: self.client.converse_stream(**params))
        stream = response.pop("stream")
        events = iter(stream)
        text: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        try:
            while (item := await self._run(next, events, _END)) is not _END:
                assert isinstance(item, dict)
                if start := item.get("contentBlockStart"):
                    if tool := start["start"].get("toolUse"):
                        tools[start["contentBlockIndex"]] = {**tool, "input": ""}
                elif delta := item.get("contentBlockDelta"):
                    piece = delta["delta"]
                    if piece.get("text"):
                        text.append(piece["text"])
                        await on_text(piece["text"])
                    elif "toolUse" in piece and delta["contentBlockIndex"] in tools:
                        tools[delta["contentBlockIndex"]]["input"] += piece["toolUse"].get("input") or ""
                elif stop := item.get("messageStop"):
                    response["stopReason"] = stop.get("stopReason")
                elif metadata := item.get("metadata"):
                    response["usage"] = metadata.get("usage")
        finally:
            stream.close()
        blocks: list[dict[str, Any]] = [{"text": "".join(text)}]
        blocks += [
            {"toolUse": {**t, "input": json.loads(t["input"] or "{}")}} for _, t in sorted(tools.items())
        ]
        response["output"] = {"message": {"role": "assistant", "content": blocks}}
        return from_bedrock_response(response, self.model_id)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        family = embedding_family(self.model_id)
        check_embedding_call(self.target, request, BEDROCK_MAX_INPUTS[family])
        try:
            body = embedding_body(family, request)
            payload, meta = await self._run(invoke_and_read, self.client, self.model_id, body)
            return from_bedrock_embedding(family, payload, meta, request, self.model_id)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_bedrock_error(exc) from exc

    async def aclose(self) -> None:
        await self._run(self.client.close)
        self.executor.shutdown(wait=False)
