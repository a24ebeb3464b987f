"""Cohere's v2 Chat wire format, as the emulator speaks it.

Served at `/cohere/v2/chat`. Answers carry `message.content` text items or
`message.tool_calls` (with a `tool_plan`), a `COMPLETE`/`MAX_TOKENS`/`TOOL_CALL` finish
reason and usage in both `billed_units` and `tokens`. Errors come as Cohere's
`{"id": ..., "message": ...}` body with an `x-debug-trace-id` header and `retry-after` on
429s (Cohere reports no other rate-limit headers). Streams are SSE `message-start`,
`content-*`, `tool-plan-delta`, `tool-call-*` and `message-end` events. The embed route is in
`cohere_embed.py`.

The command models in the catalog take no images: an image in the request is refused with
a 400, as the real API refuses it for a model without vision.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from emulator.core import Answer, Call, Conversation, Emulator, Fault

FINISH_REASONS = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}

# What the real API says for the conditions the emulator's fault codes stand for.
CODE_MESSAGES = {
    "context_length_exceeded": "invalid request: too many tokens: total number of tokens in the prompt "
    "cannot exceed 128000 - received 131072. Try using a shorter prompt or enable prompt truncating.",
    "content_filter": "blocked output: please adjust your prompt and try again, as this generation "
    "may be a potential violation of our Usage Policy",
    "insufficient_quota": "You are using a Trial key, which is limited to 1000 API calls / month. "
    "You can continue to use the Trial key for free or upgrade to a Production key.",
}


class BadRequest(Exception):
    pass


def response_headers(call: Call | None = None) -> dict[str, str]:
    """The headers of every answer: a trace id and the trial-key call counters (Cohere's only
    limit headers, left out when the scope turns rate-limit headers off)."""
    headers = {"x-debug-trace-id": uuid.uuid4().hex}
    if call is None or call.scope.rate_limit_headers:
        headers["x-endpoint-monthly-call-limit"] = "1000"
        headers["x-trial-endpoint-call-limit"] = "20"
        headers["x-trial-endpoint-call-remaining"] = "19"
    return headers


def error_response(fault: Fault, call: Call | None = None) -> web.Response:
    message = fault.message
    if fault.code in CODE_MESSAGES:
        custom = not message.startswith("emulated error")
        message = CODE_MESSAGES[fault.code] + (f" ({message})" if custom else "")
    headers = response_headers(call)
    if fault.retry_after is not None:
        headers["retry-after"] = str(fault.retry_after)
    return web.json_response(
        {"id": str(uuid.uuid4()), "message": message}, status=fault.status, headers=headers
    )


def _text(content: Any) -> tuple[str, int]:
    """A message's text and how many images it holds."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts = [str(p.get("text", "")) for p in content if p.get("type") == "text"]
    texts += [str((p.get("document") or {}).get("data", "")) for p in content if p.get("type") == "document"]
    return "\n".join(texts), sum(1 for p in content if p.get("type") == "image_url")


def parse_cohere(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    for msg in body["messages"]:
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRequest(f"invalid request: invalid message role '{role}'")
        if role == "tool" and not msg.get("tool_call_id"):
            raise BadRequest("invalid request: tool message must have a tool_call_id")
        text, count = _text(msg.get("content"))
        images += count
        for call in msg.get("tool_calls") or []:
            text += (call.get("function") or {}).get("name", "")
        texts.append((role, text))
    if images and "vision" not in model:
        raise BadRequest(f"invalid request: model '{model}' does not support image inputs")
    fmt = body.get("response_format") or {}
    json_mode = fmt.get("type") == "json_object"
    tools = [
        {"name": t["function"]["name"], "parameters": t["function"].get("parameters") or {}}
        for t in body.get("tools") or []
    ]
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice_none=body.get("tool_choice") == "NONE",
        last_is_tool_result=body["messages"][-1].get("role") == "tool",
        json_mode=json_mode,
        json_schema=fmt.get("json_schema") if json_mode else None,
        max_tokens=body.get("max_tokens"),
        images=images,
    )


def _usage(answer: Answer) -> dict[str, Any]:
    tokens = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens}
    return {"billed_units": dict(tokens), "tokens": dict(tokens), "cached_tokens": 0}


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{name}_{cid.removeprefix('call_')[:8]}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }
        for cid, name, args in answer.tool_calls
    ]


def _tool_plan(answer: Answer) -> str:
    names = ", ".join(name for _, name, _ in answer.tool_calls)
    return f"I will call {names} to answer this."


def chat_body(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if answer.tool_calls:
        message["tool_plan"] = _tool_plan(answer)
        message["tool_calls"] = _tool_calls(answer)
    else:
        message["content"] = [{"type": "text", "text": answer.text}]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, answer.request_id)),
        "finish_reason": FINISH_REASONS.get(answer.finish_reason, "COMPLETE"),
        "message": message,
        "usage": _usage(answer),
    }


async def stream_answer(request: web.Request, answer: Answer, call: Call) -> web.StreamResponse:
    chunk_ms = call.scope.stream_chunk_ms
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", **response_headers(call)})
    await resp.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await resp.write(f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode())

    body = chat_body(answer)
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    await send("message-start", {"id": body["id"], "delta": {"message": start}})
    if answer.tool_calls:
        await send("tool-plan-delta", {"delta": {"message": {"tool_plan": body["message"]["tool_plan"]}}})
        for i, tool_call in enumerate(body["message"]["tool_calls"]):
            args = tool_call["function"]["arguments"]
            first = {**tool_call, "function": {"name": tool_call["function"]["name"], "arguments": ""}}
            await send("tool-call-start", {"index": i, "delta": {"message": {"tool_calls": first}}})
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                delta = {"message": {"tool_calls": {"function": {"arguments": part}}}}
                await send("tool-call-delta", {"index": i, "delta": delta})
            await send("tool-call-end", {"index": i})
    else:
        content = {"type": "text", "text": ""}
        await send("content-start", {"index": 0, "delta": {"message": {"content": content}}})
        for piece in answer.chunks():
            if chunk_ms:
                await asyncio.sleep(chunk_ms / 1000)
            await send("content-delta", {"index": 0, "delta": {"message": {"content": {"text": piece}}}})
        await send("content-end", {"index": 0})
    end = {"finish_reason": body["finish_reason"], "usage": body["usage"]}
    await send("message-end", {"delta": end})
    await resp.write_eof()
    return resp


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(Fault(401, "invalid_api_key", "no api key supplied"))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(
                Fault(400, "invalid_json", "invalid request: could not parse the JSON body")
            )
        model = body.get("model")
        if not model:
            return error_response(Fault(400, "missing_model", "invalid request: model must be specified"))
        if not body.get("messages"):
            return error_response(
                Fault(400, "invalid_request", "invalid request: messages must not be empty")
            )
        try:
            conv = parse_cohere(body, str(model))
        except BadRequest as exc:
            return error_response(Fault(400, "invalid_request", str(exc)))
        async with emu.call("cohere", str(model), tokens=emu.request_tokens(conv)) as call:
            if call.fault is not None:
                return error_response(call.fault, call)
            answer = emu.answer(conv, call.scope.answer_text)
            if body.get("stream"):
                return await stream_answer(request, answer, call)
            return web.json_response(chat_body(answer), headers=response_headers(call))

    app.router.add_post("/cohere/v2/chat", chat)
