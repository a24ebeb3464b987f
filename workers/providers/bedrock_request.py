"""Our OpenAI-shaped chat request as the keyword arguments of Bedrock's Converse and
ConverseStream (used by the adapter, `bedrock.py`).

System and developer messages become `system` blocks; messages become `user`/`assistant`
turns of content blocks (adjacent turns of one role merged, as Converse requires
alternation); images become `image` blocks with raw bytes (http URLs are fetched through the
outbound guard, since Converse takes no URLs); tool calls and results become `toolUse` /
`toolResult` blocks; a JSON schema becomes `outputConfig`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import httpx

from core.types import ChatRequest, ContentPart, Message
from workers import outbound
from workers.providers.errors import InvalidRequest

MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "gif": b"GIF8", "webp": b"RIFF"}


def _image_bytes(part: ContentPart, timeout_s: float) -> tuple[str, bytes]:
    assert part.image_url is not None
    url = part.image_url.url
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0]
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"image data URL is not valid base64: {exc}") from None
    elif url.startswith(("http://", "https://")):
        try:  # never an internal address, on any redirect hop (workers/outbound.py)
            fetched = outbound.fetch(
                "GET", url, policy=outbound.Policy.of(), timeout=timeout_s, max_bytes=MAX_IMAGE_BYTES
            )
        except outbound.Refused as exc:
            raise InvalidRequest(f"image {url[:200]!r} was not fetched: {exc}") from None
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"could not fetch image {url[:200]!r}: {exc}") from None
        if fetched.status_code >= 400:
            raise InvalidRequest(f"could not fetch image {url[:200]!r}: HTTP {fetched.status_code}")
        mime = fetched.headers.get("content-type", "").split(";")[0].strip().lower()
        data = fetched.body
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidRequest(f"image {url[:200]!r} is larger than {MAX_IMAGE_BYTES} bytes")
    else:
        raise InvalidRequest(f"image URLs must be http(s) or data: URLs, not {url[:40]!r}")
    fmt = mime.removeprefix("image/").replace("jpg", "jpeg")
    if fmt not in IMAGE_MAGIC:  # e.g. served as application/octet-stream: look at the bytes
        fmt = next((f for f, magic in IMAGE_MAGIC.items() if data.startswith(magic)), fmt)
    if fmt not in IMAGE_MAGIC:
        raise InvalidRequest(f"Bedrock takes png, jpeg, gif or webp images, not {mime!r}")
    return fmt, data


def _tool_result(message: Message) -> dict[str, Any]:
    text = message.text()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    content = [{"json": parsed}] if isinstance(parsed, dict) else [{"text": text or "(empty)"}]
    return {"toolResult": {"toolUseId": message.tool_call_id, "content": content}}


def _blocks(message: Message, timeout_s: float) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [_tool_result(message)]
    blocks: list[dict[str, Any]] = []
    parts = message.content if isinstance(message.content, list) else None
    if parts is None and message.content:
        blocks.append({"text": message.content})
    for part in parts or []:
        if part.type == "text" and part.text:
            blocks.append({"text": part.text})
        elif part.type == "image_url":
            fmt, data = _image_bytes(part, timeout_s)
            blocks.append({"image": {"format": fmt, "source": {"bytes": data}}})
    for tc in message.tool_calls or []:
        try:
            args = json.loads(tc.function.arguments or "{}")
        except ValueError as exc:
            raise InvalidRequest(f"tool call arguments are not JSON: {exc}") from None
        blocks.append({"toolUse": {"toolUseId": tc.id, "name": tc.function.name, "input": args}})
    return blocks


def to_bedrock_params(request: ChatRequest, model_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """Keyword arguments for `converse` / `converse_stream`. May fetch http image URLs."""
    system = [{"text": m.text()} for m in request.messages if m.role in ("system", "developer") and m.text()]
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, timeout_s)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    params: dict[str, Any] = {"modelId": model_id, "messages": messages}
    if system:
        params["system"] = system
    inference: dict[str, Any] = {
        "maxTokens": request.max_tokens,
        "temperature": request.temperature,
        "topP": request.top_p,
    }
    inference = {k: v for k, v in inference.items() if v is not None}
    if request.stop:
        inference["stopSequences"] = request.stop
    if inference:
        params["inferenceConfig"] = inference
    has_tool_blocks = any(m.role == "tool" or m.tool_calls for m in request.messages)
    if request.tools and (request.tool_choice != "none" or has_tool_blocks):
        tools = [
            {
                "toolSpec": {
                    "name": t.function.name,
                    **({"description": t.function.description} if t.function.description else {}),
                    "inputSchema": {"json": t.function.parameters},
                }
            }
            for t in request.tools
        ]
        params["toolConfig"] = {"tools": tools}
        choice = request.tool_choice
        if choice == "required":
            params["toolConfig"]["toolChoice"] = {"any": {}}
        elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
            params["toolConfig"]["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        raise InvalidRequest("Bedrock Converse has no JSON mode; send a json_schema response_format instead")
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        schema = {"name": fmt.json_schema.name, "schema": json.dumps(fmt.json_schema.schema_)}
        params["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": schema}}}
    return params
