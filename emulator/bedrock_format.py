"""AWS Bedrock Runtime's Converse and ConverseStream wire format, as the emulator speaks it.

Served at `/bedrock/model/{modelId}/converse` and `/bedrock/model/{modelId}/converse-stream`,
the paths boto3's `bedrock-runtime` client builds from `endpoint_url`. Requests carry
`messages` of content blocks (`text`, `image` with base64 `bytes`, `toolUse`, `toolResult`),
`system`, `inferenceConfig`, `toolConfig` and `outputConfig` (a JSON schema); answers carry
`output.message`, `stopReason` (`end_turn`, `max_tokens`, `tool_use`), `usage` and `metrics`.
Streams use the AWS event-stream binary encoding (`application/vnd.amazon.eventstream`),
written by `encode_event`. Errors are rest-json: the status, an `x-amzn-ErrorType` header
naming the exception and a `{"message"}` body. Bedrock sends no Retry-After or other
rate-limit headers on throttling, so neither does the emulator. InvokeModel (the embedding
models) is in `bedrock_embed.py`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import uuid
from typing import Any

from aiohttp import web

from emulator.core import Answer, Conversation, Emulator, Fault

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# Fault codes whose Bedrock rendering is a specific exception and message.
CODED_ERRORS = {
    "context_length_exceeded": (400, "ValidationException", "Input is too long for requested model."),
    "content_filter": (400, "ValidationException", "This request has been blocked by our content filters."),
    "insufficient_quota": (400, "ServiceQuotaExceededException", None),
}


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude, prelude CRC, string headers, payload, message CRC."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += struct.pack("!B", len(raw_name)) + raw_name
        encoded_headers += struct.pack("!BH", 7, len(raw_value)) + raw_value
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    message = prelude + struct.pack("!I", binascii.crc32(prelude)) + encoded_headers + payload
    return message + struct.pack("!I", binascii.crc32(message))


def event(event_type: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event(headers, json.dumps(body).encode())


def exception_event(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event(headers, json.dumps({"message": message}).encode())


def parse_bedrock(body: dict[str, Any], model: str) -> Conversation:
    texts: list[tuple[str, str]] = []
    images = 0
    system = "\n".join(block.get("text", "") for block in body.get("system") or [])
    if system:
        texts.append(("system", system))
    last_is_tool_result = False
    for message in body.get("messages") or []:
        pieces: list[str] = []
        is_tool_result = False
        for block in message.get("content") or []:
            if "text" in block:
                pieces.append(block["text"])
            elif "image" in block:
                images += 1
            elif "toolUse" in block:
                pieces.append(block["toolUse"].get("name", ""))
            elif "toolResult" in block:
                is_tool_result = True
                for item in block["toolResult"].get("content") or []:
                    pieces.append(item["text"] if "text" in item else json.dumps(item.get("json")))
        role = "tool" if is_tool_result else message.get("role", "user")
        texts.append((role, "\n".join(pieces)))
        last_is_tool_result = is_tool_result
    tool_config = body.get("toolConfig") or {}
    tools = [
        {"name": spec["name"], "parameters": (spec.get("inputSchema") or {}).get("json") or {}}
        for tool in tool_config.get("tools") or []
        if (spec := tool.get("toolSpec"))
    ]
    text_format = (body.get("outputConfig") or {}).get("textFormat") or {}
    schema = ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema")
    return Conversation(
        model=model,
        texts=texts,
        tools=tools,
        last_is_tool_result=last_is_tool_result,
        json_schema=json.loads(schema) if schema else None,
        max_tokens=(body.get("inferenceConfig") or {}).get("maxTokens"),
        images=images,
    )


def _invalid_images(body: dict[str, Any]) -> str | None:
    for message in body.get("messages") or []:
        for block in message.get("content") or []:
            image = block.get("image")
            if image is None:
                continue
            if image.get("format") not in ("png", "jpeg", "gif", "webp"):
                return f"The provided image format {image.get('format')!r} is not supported."
            try:
                base64.b64decode((image.get("source") or {}).get("bytes", ""), validate=True)
            except (binascii.Error, ValueError):
                return "The provided image is not valid base64."
    return None


def error_response(fault: Fault) -> web.Response:
    status, kind, message = fault.status, ERROR_TYPES.get(fault.status), fault.message
    if fault.code in CODED_ERRORS:
        status, kind, coded_message = CODED_ERRORS[fault.code]
        message = coded_message or message
    if status == 401:
        status = 403  # AWS answers a bad key with 403 UnrecognizedClientException
    if kind is None:
        kind = "InternalServerException" if status >= 500 else "ValidationException"
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return web.json_response({"message": message}, status=status, headers=headers)


def _usage(answer: Answer) -> dict[str, Any]:
    return {
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "totalTokens": answer.input_tokens + answer.output_tokens,
    }


def _content(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [
            {"toolUse": {"toolUseId": cid, "name": name, "input": json.loads(args)}}
            for cid, name, args in answer.tool_calls
        ]
    return [{"text": answer.text}]


def converse_body(answer: Answer) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": _content(answer)}},
        "stopReason": STOP_REASONS[answer.finish_reason],
        "usage": _usage(answer),
        "metrics": {"latencyMs": 1},
    }


async def stream_answer(request: web.Request, answer: Answer, chunk_ms: float) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": answer.request_id}
    )
    await resp.prepare(request)
    await resp.write(event("messageStart", {"role": "assistant"}))
    if answer.tool_calls:
        for index, (cid, name, args) in enumerate(answer.tool_calls):
            start = {"toolUse": {"toolUseId": cid, "name": name}}
            await resp.write(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": args}}}
            await resp.write(event("contentBlockDelta", delta))
            await resp.write(event("contentBlockStop", {"contentBlockIndex": index}))
    else:
        for piece in answer.chunks():
            if chunk_ms:
                await asyncio.sleep(chunk_ms / 1000)
            await resp.write(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
        await resp.write(event("contentBlockStop", {"contentBlockIndex": 0}))
    await resp.write(event("messageStop", {"stopReason": STOP_REASONS[answer.finish_reason]}))
    await resp.write(event("metadata", {"usage": _usage(answer), "metrics": {"latencyMs": 1}}))
    await resp.write_eof()
    return resp


def unauthenticated(request: web.Request) -> web.Response | None:
    """AWS's answer to an unsigned call (None when it is signed)."""
    if request.headers.get("authorization", "").startswith(("AWS4-HMAC-SHA256", "Bearer ")):
        return None
    return error_response(Fault(403, "missing_auth", "Missing Authentication Token"))


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def handle(request: web.Request, stream: bool) -> web.StreamResponse:
        model = request.match_info["model"]
        refused = unauthenticated(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "The request body is not valid JSON."))
        if not body.get("messages"):
            return error_response(
                Fault(400, "invalid_request", "A conversation must start with a user message.")
            )
        problem = _invalid_images(body)
        if problem:
            return error_response(Fault(400, "invalid_image", problem))
        conv = parse_bedrock(body, model)
        async with emu.call("bedrock", model, tokens=emu.request_tokens(conv)) as call:
            if call.fault is not None:
                return error_response(call.fault)
            answer = emu.answer(conv, call.scope.answer_text)
            if stream:
                return await stream_answer(request, answer, call.scope.stream_chunk_ms)
            return web.json_response(converse_body(answer), headers={"x-amzn-RequestId": answer.request_id})

    async def converse(request: web.Request) -> web.StreamResponse:
        return await handle(request, stream=False)

    async def converse_stream(request: web.Request) -> web.StreamResponse:
        return await handle(request, stream=True)

    app.router.add_post("/bedrock/model/{model}/converse", converse)
    app.router.add_post("/bedrock/model/{model}/converse-stream", converse_stream)
