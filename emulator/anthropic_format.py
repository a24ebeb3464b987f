"""Anthropic's Messages wire format, as the emulator speaks it.

Served at `/anthropic/v1/messages`. Requests need `x-api-key` and `anthropic-version` and
a `max_tokens`, as the real API does. Answers carry text and `tool_use` blocks, usage in
`input_tokens`/`output_tokens`/`cache_*_input_tokens`, a `request-id` header and the
`anthropic-ratelimit-*` headers. Errors come as `{"type": "error", "error": {...}}` with
Anthropic's error types (529 is `overloaded_error`) and `retry-after` on 429s. Streams are
SSE `message_start`, `content_block_*`, `message_delta` and `message_stop` events.

Anthropic has no JSON mode: a system prompt asking for a JSON object makes the emulated
model answer with one, as a real model following the instruction would.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from emulator.core import Answer, Call, Conversation, Emulator, Fault
from emulator.limits import anthropic_headers

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# What the real API says for the conditions the emulator's fault codes stand for.
CODE_MESSAGES = {
    "context_length_exceeded": "prompt is too long: 213417 tokens > 200000 maximum",
    "content_filter": "Output blocked by content filtering policy",
    "insufficient_quota": "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits.",
    "overloaded_error": "Overloaded",
}


class BadRequest(Exception):
    pass


def _request_id() -> str:
    return f"req_emu{int(time.time() * 1000)}"


def _unlimited_headers(remaining: int = 3999) -> dict[str, str]:
    """What a scope without limits reports: plenty left (none left with a scripted 429)."""
    return {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
        "anthropic-ratelimit-tokens-limit": "4000000",
        "anthropic-ratelimit-tokens-remaining": "3999000",
    }


def rate_headers(call: Call) -> dict[str, str]:
    remaining = 0 if call.fault is not None and call.fault.status == 429 else 3999
    return call.rate_headers(anthropic_headers, _unlimited_headers(remaining))


def error_response(fault: Fault, extra_headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(fault.status, "api_error" if fault.status >= 500 else "invalid_request_error")
    message = fault.message
    if fault.code in CODE_MESSAGES:
        custom = not message.startswith("emulated error")
        message = CODE_MESSAGES[fault.code] + (f" ({message})" if custom else "")
    request_id = _request_id()
    headers = {"request-id": request_id, **(extra_headers or {})}
    if fault.retry_after is not None:
        headers["retry-after"] = str(fault.retry_after)
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return web.json_response(body, status=fault.status, headers=headers)


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, list):
        return "\n".join(b.get("text", "") for b in block if b.get("type") == "text")
    return ""


def parse_anthropic(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    system = _block_text(body.get("system"))
    if system:
        texts.append(("system", system))
    last_is_tool_result = False
    for msg in body["messages"]:
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(
                f"messages: Input tag '{role}' found using 'role' does not match any of the expected tags"
            )
        content = msg.get("content")
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        )
        last_is_tool_result = False
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                texts.append((role, block.get("text", "")))
            elif kind == "image":
                source: dict[str, Any] = block.get("source") or {}
                if source.get("type") == "base64" and source.get("media_type") not in IMAGE_TYPES:
                    raise BadRequest(
                        f"Image does not match the provided media type {source.get('media_type')}"
                    )
                images += 1
            elif kind == "tool_use":
                texts.append((role, str(block.get("name", ""))))
            elif kind == "tool_result":
                texts.append(("tool", _block_text(block.get("content"))))
                last_is_tool_result = True
            else:
                raise BadRequest(f"messages: unknown content block type '{kind}'")
    tools = [{"name": t["name"], "parameters": t.get("input_schema") or {}} for t in body.get("tools") or []]
    fmt = ((body.get("output_config") or {}).get("format")) or {}
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice_none=(body.get("tool_choice") or {}).get("type") == "none",
        last_is_tool_result=last_is_tool_result,
        json_mode="json object" in system.lower(),
        json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        max_tokens=body.get("max_tokens"),
        images=images,
    )


def _usage(answer: Answer, output_tokens: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens if output_tokens is None else output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def _content(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.text:
        blocks.append({"type": "text", "text": answer.text})
    for cid, name, args in answer.tool_calls:
        blocks.append({"type": "tool_use", "id": _tool_id(cid), "name": name, "input": json.loads(args)})
    return blocks


def message_body(answer: Answer, model: str, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": f"msg_{answer.request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(answer) if content is None else content,
        "stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn") if content is None else None,
        "stop_sequence": None,
        "usage": _usage(answer, None if content is None else 1),
    }


async def stream_answer(request: web.Request, answer: Answer, model: str, call: Call) -> web.StreamResponse:
    chunk_ms = call.scope.stream_chunk_ms
    headers = {"content-type": "text/event-stream", "request-id": _request_id(), **rate_headers(call)}
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    await send("message_start", {"type": "message_start", "message": message_body(answer, model, [])})
    await send("ping", {"type": "ping"})
    index = 0
    if answer.text:
        await send(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        for piece in answer.chunks():
            if chunk_ms:
                await asyncio.sleep(chunk_ms / 1000)
            await send(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        index = 1
    for i, (cid, name, args) in enumerate(answer.tool_calls, start=index):
        block = {"type": "tool_use", "id": _tool_id(cid), "name": name, "input": {}}
        await send("content_block_start", {"type": "content_block_start", "index": i, "content_block": block})
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                },
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": i})
    delta = {"stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn"), "stop_sequence": None}
    await send("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(answer)})
    await send("message_stop", {"type": "message_stop"})
    await resp.write_eof()
    return resp


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def messages(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            return error_response(Fault(401, "invalid_api_key", "x-api-key header is required"))
        if not request.headers.get("anthropic-version"):
            return error_response(
                Fault(400, "invalid_request_error", "anthropic-version: header is required")
            )
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "There was an issue with your request body"))
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return error_response(Fault(400, "invalid_request_error", f"{field}: Field required"))
        if not body["messages"]:
            return error_response(
                Fault(400, "invalid_request_error", "messages: at least one message is required")
            )
        model = str(body["model"])
        try:
            conv = parse_anthropic(body, model)
        except BadRequest as exc:
            return error_response(Fault(400, "invalid_request_error", str(exc)))
        async with emu.call("anthropic", model, tokens=emu.request_tokens(conv)) as call:
            if call.fault is not None:
                return error_response(call.fault, rate_headers(call))
            answer = emu.answer(conv, call.scope.answer_text)
            if body.get("stream"):
                return await stream_answer(request, answer, model, call)
            headers = {"request-id": _request_id(), **rate_headers(call)}
            return web.json_response(message_body(answer, model), headers=headers)

    app.router.add_post("/anthropic/v1/messages", messages)
