"""OpenAI's chat-completions wire format, as the emulator speaks it.

Served at `/openai/v1/chat/completions`, at Azure's deployment path
`/azure/openai/deployments/{deployment}/chat/completions`, and at `/ollama/v1/...` and
`/compatible/v1/...` for OpenAI-compatible endpoints. Errors come in OpenAI's error body
with `x-request-id` and, for 429s, `retry-after`; streams are SSE `chat.completion.chunk`s
ending with a usage chunk when `stream_options.include_usage` is set. Every answer carries
the `x-ratelimit-*` headers (`rate_headers`). The embeddings routes are in `openai_embed.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from emulator.core import Answer, Call, Conversation, Emulator, Fault
from emulator.limits import openai_headers


def parse_openai(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if p.get("type") == "text"]
            images += sum(1 for p in content if p.get("type") == "image_url")
            text = "\n".join(parts)
        else:
            text = content or ""
        if msg.get("tool_calls"):
            text += " ".join(tc["function"]["name"] for tc in msg["tool_calls"])
        texts.append((msg.get("role", "user"), text))
    fmt = body.get("response_format") or {}
    schema = None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
    tools = [
        {"name": t["function"]["name"], "parameters": t["function"].get("parameters") or {}}
        for t in body.get("tools") or []
    ]
    messages = body.get("messages") or [{}]
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice_none=body.get("tool_choice") == "none",
        last_is_tool_result=messages[-1].get("role") == "tool",
        json_mode=fmt.get("type") == "json_object",
        json_schema=schema,
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        images=images,
    )


def error_response(fault: Fault, extra_headers: dict[str, str] | None = None) -> web.Response:
    kind = {429: "rate_limit_error", 401: "authentication_error", 403: "permission_error"}.get(
        fault.status, "invalid_request_error" if fault.status < 500 else "server_error"
    )
    headers = {"x-request-id": f"req_emu_{int(time.time() * 1000)}", **(extra_headers or {})}
    if fault.retry_after is not None:
        headers["retry-after"] = str(fault.retry_after)
    body = {"error": {"message": fault.message, "type": kind, "param": None, "code": fault.code}}
    return web.json_response(body, status=fault.status, headers=headers)


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, name, args in answer.tool_calls
    ]


def completion_body(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool_calls:
        message["tool_calls"] = _tool_calls(answer)
    return {
        "id": f"chatcmpl-{answer.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}
        ],
        "usage": _usage(answer),
        "system_fingerprint": "emulator",
    }


# What a scope without limits reports: plenty left.
UNLIMITED_HEADERS = {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999"}


def rate_headers(call: Call) -> dict[str, str]:
    return call.rate_headers(openai_headers, UNLIMITED_HEADERS)


async def stream_answer(
    request: web.Request, answer: Answer, model: str, call: Call, include_usage: bool
) -> web.StreamResponse:
    chunk_ms = call.scope.stream_chunk_ms
    resp = web.StreamResponse(
        headers={"content-type": "text/event-stream", "x-request-id": answer.request_id, **rate_headers(call)}
    )
    await resp.prepare(request)
    base = {
        "id": f"chatcmpl-{answer.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
        payload = {**base, "choices": choices, "usage": usage}
        await resp.write(f"data: {json.dumps(payload)}\n\n".encode())

    await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    if answer.tool_calls:
        for i, tc in enumerate(_tool_calls(answer)):
            await send([{"index": 0, "delta": {"tool_calls": [{"index": i, **tc}]}, "finish_reason": None}])
    else:
        for piece in answer.chunks():
            if chunk_ms:
                await asyncio.sleep(chunk_ms / 1000)
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
    await send([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}])
    if include_usage:
        await send([], _usage(answer))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def handle(request: web.Request, provider: str, model: str | None = None) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "request body is not valid JSON"))
        model = model or body.get("model")
        if not model:
            return error_response(Fault(400, "missing_model", "you must provide a model parameter"))
        if not body.get("messages"):
            return error_response(Fault(400, "invalid_request_error", "'messages' must be a non-empty array"))
        conv = parse_openai(body, model)
        async with emu.call(provider, model, tokens=emu.request_tokens(conv)) as call:
            if call.fault is not None:
                return error_response(call.fault, rate_headers(call))
            answer = emu.answer(conv, call.scope.answer_text)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return await stream_answer(request, answer, model, call, include_usage)
            headers = {"x-request-id": answer.request_id, **rate_headers(call)}
            return web.json_response(completion_body(answer, model), headers=headers)

    async def openai_chat(request: web.Request) -> web.StreamResponse:
        return await handle(request, request.match_info["provider"])

    async def azure_chat(request: web.Request) -> web.StreamResponse:
        if "api-version" not in request.query:
            return error_response(
                Fault(404, "404", "Resource not found: api-version query parameter missing")
            )
        return await handle(request, "azure", request.match_info["deployment"])

    async def list_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "emulated", "object": "model"}]})

    app.router.add_post("/{provider:openai|ollama|compatible}/v1/chat/completions", openai_chat)
    app.router.add_get("/{provider:openai|ollama|compatible}/v1/models", list_models)
    app.router.add_post("/azure/openai/deployments/{deployment}/chat/completions", azure_chat)
