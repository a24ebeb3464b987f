"""Mistral's chat-completions wire format, as the emulator speaks it.

Served at `/mistral/v1/chat/completions`. Close to OpenAI's, with Mistral's differences:
`random_seed`, `tool_choice` `"any"`, an `image_url` that may be a bare string, tool-call
ids of exactly nine letters or digits (others are refused, as the real API refuses them),
usage in the chunk that carries the finish reason, and errors as
`{"object": "error", "message", "type", "param", "code"}` with `mistral-correlation-id` and,
on 429s, `retry-after`. Rate-limit headers are Mistral's `x-ratelimitbysize-*` (`rate_headers`).
The embeddings route is in `mistral_embed.py`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from emulator.core import Answer, Call, Conversation, Emulator, Fault
from emulator.limits import mistral_headers

TOOL_ID = re.compile(r"[A-Za-z0-9]{9}")

ERROR_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}

# What the real API says for the conditions the emulator's fault codes stand for.
CODE_MESSAGES = {
    "context_length_exceeded": (
        "invalid_request_prompt",
        "Prompt contains 131072 tokens and 0 draft tokens, "
        "too large for model with 128000 maximum context length",
    ),
    "content_filter": ("invalid_request_moderation", "Request blocked by the content moderation policy"),
    "insufficient_quota": ("quota_exceeded", "Monthly usage quota exceeded for this workspace"),
}


class BadRequest(Exception):
    pass


# What a scope without limits reports: plenty left.
UNLIMITED_HEADERS = {
    "x-ratelimitbysize-limit-minute": "500000",
    "x-ratelimitbysize-remaining-minute": "499000",
    "x-ratelimitbysize-limit-month": "1000000000",
    "x-ratelimitbysize-remaining-month": "999000000",
}


def response_headers(call: Call) -> dict[str, str]:
    """A successful answer's headers: the correlation id and the rate-limit headers."""
    return {"mistral-correlation-id": str(uuid.uuid4()), **rate_headers(call)}


def rate_headers(call: Call) -> dict[str, str]:
    return call.rate_headers(mistral_headers, UNLIMITED_HEADERS)


def error_response(fault: Fault, extra_headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(
        fault.status, "invalid_request_error" if fault.status < 500 else "internal_server_error"
    )
    message = fault.message
    if fault.code in CODE_MESSAGES:
        kind, phrase = CODE_MESSAGES[fault.code]
        custom = not message.startswith("emulated error")
        message = phrase + (f" ({message})" if custom else "")
    headers = {"mistral-correlation-id": str(uuid.uuid4()), **(extra_headers or {})}
    if fault.retry_after is not None:
        headers["retry-after"] = str(fault.retry_after)
    body = {
        "object": "error",
        "message": message,
        "type": kind,
        "param": None,
        "code": str(fault.status * 10),
    }
    return web.json_response(body, status=fault.status, headers=headers)


def parse_mistral(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    for msg in body["messages"]:
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"Invalid role '{role}'")
        content = msg.get("content")
        if isinstance(content, list):
            text = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
            images += sum(1 for p in content if p.get("type") == "image_url")
        else:
            text = content or ""
        for call in msg.get("tool_calls") or []:
            if not TOOL_ID.fullmatch(str(call.get("id"))):
                raise BadRequest(
                    f"Tool call id was {call.get('id')} but must be a-z, A-Z, 0-9, with a length of 9."
                )
            text += call["function"]["name"]
        if role == "tool" and not TOOL_ID.fullmatch(str(msg.get("tool_call_id"))):
            raise BadRequest(
                f"Tool call id was {msg.get('tool_call_id')} but must be a-z, A-Z, 0-9, with a length of 9."
            )
        texts.append((role, text))
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or {} if fmt.get("type") == "json_schema" else None
    tools = [
        {"name": t["function"]["name"], "parameters": t["function"].get("parameters") or {}}
        for t in body.get("tools") or []
    ]
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice_none=body.get("tool_choice") == "none",
        last_is_tool_result=body["messages"][-1].get("role") == "tool",
        json_mode=fmt.get("type") == "json_object",
        json_schema=schema,
        max_tokens=body.get("max_tokens"),
        images=images,
    )


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": cid.removeprefix("call_")[:9],
            "type": "function",
            "index": i,
            "function": {"name": name, "arguments": args},
        }
        for i, (cid, name, args) in enumerate(answer.tool_calls)
    ]


def _base(answer: Answer, model: str, kind: str) -> dict[str, Any]:
    return {
        "id": answer.request_id.replace("-", ""),
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def completion_body(answer: Answer, model: str) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": answer.text,
        "tool_calls": _tool_calls(answer) or None,
        "prefix": False,
    }
    choice = {"index": 0, "message": message, "finish_reason": answer.finish_reason}
    return {**_base(answer, model, "chat.completion"), "choices": [choice], "usage": _usage(answer)}


async def stream_answer(request: web.Request, answer: Answer, model: str, call: Call) -> web.StreamResponse:
    chunk_ms = call.scope.stream_chunk_ms
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", **response_headers(call)})
    await resp.prepare(request)
    base = _base(answer, model, "chat.completion.chunk")

    async def send(
        delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
    ) -> None:
        payload: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            payload["usage"] = usage
        await resp.write(f"data: {json.dumps(payload)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    if answer.tool_calls:
        await send({"tool_calls": _tool_calls(answer)})  # Mistral sends whole tool calls at once
    else:
        for piece in answer.chunks():
            if chunk_ms:
                await asyncio.sleep(chunk_ms / 1000)
            await send({"content": piece})
    await send({"content": ""}, answer.finish_reason, _usage(answer))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(Fault(401, "invalid_api_key", "Unauthorized"))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "Invalid JSON body"))
        model = body.get("model")
        if not model or not body.get("messages"):
            return error_response(Fault(422, "invalid_request_error", "model and messages are required"))
        try:
            conv = parse_mistral(body, str(model))
        except BadRequest as exc:
            return error_response(Fault(400, "invalid_request_message_order", str(exc)))
        async with emu.call("mistral", str(model), tokens=emu.request_tokens(conv)) as call:
            if call.fault is not None:
                return error_response(call.fault, rate_headers(call))
            answer = emu.answer(conv, call.scope.answer_text)
            if body.get("stream"):
                return await stream_answer(request, answer, str(model), call)
            return web.json_response(completion_body(answer, str(model)), headers=response_headers(call))

    app.router.add_post("/mistral/v1/chat/completions", chat)
