"""Google Gemini's `generateContent` wire format (the Gemini Developer API), as the emulator speaks it.

Served at `/gemini/{version}/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, the paths the `google-genai` SDK builds from a custom
`base_url`. Requests carry `contents` of `parts` (text, `inlineData`, `fileData`,
`functionCall`, `functionResponse`), `systemInstruction`, `tools[].functionDeclarations`,
`toolConfig` and `generationConfig`. Answers carry `candidates`, `usageMetadata` (with
`thoughtsTokenCount` for the 2.5 models that think by default) and `responseId`; streams are
SSE chunks of the same shape. Errors use Google's `{"error": {"code", "message", "status",
"details"}}` body, with a `RetryInfo` detail on 429s (Gemini sends no retry-after or other
rate-limit headers); a content-filter fault is a 200 whose `promptFeedback.blockReason` is
`SAFETY`, as Gemini reports a blocked prompt. The embedding methods are in `gemini_embed.py`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from emulator.core import Answer, Conversation, Emulator, Fault

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
CONTEXT_WINDOW = 1048576


def field_of(obj: dict[str, Any], camel: str) -> Any:
    """A field by its JSON name or its proto name: Google's APIs accept both, and the SDK sends both."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def parse_gemini(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    system = field_of(body, "systemInstruction") or {}
    system_text = "\n".join(p.get("text", "") for p in system.get("parts", []) if "text" in p)
    if system_text:
        texts.append(("system", system_text))
    contents = body.get("contents") or []
    last_is_tool_result = False
    for content in contents:
        parts = content.get("parts") or []
        pieces: list[str] = []
        is_tool_result = False
        for part in parts:
            if "text" in part:
                pieces.append(part["text"])
            elif field_of(part, "inlineData") or field_of(part, "fileData"):
                images += 1
            elif field_of(part, "functionCall"):
                pieces.append(field_of(part, "functionCall").get("name", ""))
            elif field_of(part, "functionResponse"):
                is_tool_result = True
                pieces.append(json.dumps(field_of(part, "functionResponse").get("response") or {}))
        role = "tool" if is_tool_result else ("assistant" if content.get("role") == "model" else "user")
        texts.append((role, "\n".join(pieces)))
        last_is_tool_result = is_tool_result
    tools = [
        {"name": fd["name"], "parameters": field_of(fd, "parametersJsonSchema") or fd.get("parameters") or {}}
        for tool in body.get("tools") or []
        for fd in field_of(tool, "functionDeclarations") or []
    ]
    mode = (field_of(field_of(body, "toolConfig") or {}, "functionCallingConfig") or {}).get("mode")
    gen = field_of(body, "generationConfig") or {}
    schema = field_of(gen, "responseJsonSchema") or field_of(gen, "responseSchema")
    json_mode = field_of(gen, "responseMimeType") == "application/json"
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        tool_choice_none=mode == "NONE",
        last_is_tool_result=last_is_tool_result,
        json_mode=json_mode and schema is None,
        json_schema=_lower_types(schema) if json_mode and schema is not None else None,
        max_tokens=field_of(gen, "maxOutputTokens"),
        images=images,
    )


def _lower_types(schema: Any) -> Any:
    """OpenAPI-style `responseSchema` spells types in capitals ("OBJECT"); JSON Schema does not."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_response(fault: Fault) -> web.Response:
    status, message, details = fault.status, fault.message, []
    if fault.code == "context_length_exceeded":
        status = 400
        message = f"The input token count exceeds the maximum number of tokens allowed ({CONTEXT_WINDOW})."
    elif fault.code == "insufficient_quota":
        status = 429
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel",
                    }
                ],
            }
        )
    if fault.retry_after is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.retry_after:g}s"}
        )
    return web.json_response(error_body(status, message, details), status=status)


def _usage(answer: Answer, model: str, *, final: bool = True) -> dict[str, Any]:
    thinks = model.startswith("gemini-2.5") and "lite" not in model and not answer.tool_calls
    thoughts = min(64, answer.input_tokens) if thinks else 0
    usage: dict[str, Any] = {
        "promptTokenCount": answer.input_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
    }
    if final:
        usage["candidatesTokenCount"] = answer.output_tokens
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = answer.input_tokens + (answer.output_tokens + thoughts if final else 0)
    return usage


def _parts(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [
            {"functionCall": {"name": name, "args": json.loads(args)}} for _, name, args in answer.tool_calls
        ]
    return [{"text": answer.text}]


def response_body(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": _parts(answer)},
                "finishReason": FINISH[answer.finish_reason],
                "index": 0,
            }
        ],
        "usageMetadata": _usage(answer, model),
        "modelVersion": model,
        "responseId": answer.request_id,
    }


def blocked_body(model: str, conv: Conversation, request_id: str) -> dict[str, Any]:
    prompt = sum(len(t) // 4 + 1 for _, t in conv.texts)
    return {
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
        },
        "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
        "modelVersion": model,
        "responseId": request_id,
    }


async def stream_answer(
    request: web.Request, answer: Answer, model: str, chunk_ms: float
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)

    async def send(payload: dict[str, Any]) -> None:
        await resp.write(f"data: {json.dumps(payload)}\r\n\r\n".encode())

    base = {"modelVersion": model, "responseId": answer.request_id}
    pieces = [] if answer.tool_calls else answer.chunks()
    for piece in pieces[:-1]:
        if chunk_ms:
            await asyncio.sleep(chunk_ms / 1000)
        candidate = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
        await send({"candidates": [candidate], "usageMetadata": _usage(answer, model, final=False), **base})
    last_parts = _parts(answer) if answer.tool_calls else [{"text": pieces[-1] if pieces else ""}]
    candidate = {
        "content": {"role": "model", "parts": last_parts},
        "finishReason": FINISH[answer.finish_reason],
        "index": 0,
    }
    await send({"candidates": [candidate], "usageMetadata": _usage(answer, model), **base})
    await resp.write_eof()
    return resp


def unauthenticated(request: web.Request) -> web.Response | None:
    """Google's answer to a call without an API key (None when it has one)."""
    if request.headers.get("x-goog-api-key") or request.query.get("key"):
        return None
    message = (
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )
    return web.json_response(error_body(403, message), status=403)


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        model, action = request.match_info["model"], request.match_info["action"]
        refused = unauthenticated(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(error_body(400, "Invalid JSON payload received."), status=400)
        if not body.get("contents"):
            return web.json_response(
                error_body(400, "* GenerateContentRequest.contents: contents is not specified"), status=400
            )
        conv = parse_gemini(body, model)
        async with emu.call("gemini", model, tokens=emu.request_tokens(conv)) as call:
            fault = call.fault
            if fault is not None and fault.code == "content_filter":
                blocked = blocked_body(model, conv, f"emu-blocked-{len(emu.calls)}")
                if action == "streamGenerateContent":
                    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
                    await resp.prepare(request)
                    await resp.write(f"data: {json.dumps(blocked)}\r\n\r\n".encode())
                    await resp.write_eof()
                    return resp
                return web.json_response(blocked)
            if fault is not None:
                return error_response(fault)
            answer = emu.answer(conv, call.scope.answer_text)
            if action == "streamGenerateContent":
                return await stream_answer(request, answer, model, call.scope.stream_chunk_ms)
            return web.json_response(response_body(answer, model))

    # Only this module's methods: the embedding methods share the path and are gemini_embed's.
    path = "/gemini/{version}/models/{model}:{action:generateContent|streamGenerateContent}"
    app.router.add_post(path, handle)
