"""Our OpenAI-shaped chat request as keyword arguments for Anthropic's `messages.create`
(used by the online adapter, `anthropic.py`, and by batch mode, `anthropic_batch.py`).

System and developer messages become the `system` prompt; assistant tool calls become
`tool_use` blocks and tool messages `tool_result` blocks in a user turn (turns alternate, so
neighbours of one role are merged); images become `image` blocks (base64 from data: URLs,
`url` sources otherwise). Anthropic has no JSON mode, so `json_object` is asked for in the
system prompt; `json_schema` uses structured output (`output_config.format`). `top_p` is sent
only without `temperature` (current Claude models reject both), and `temperature` is capped
at Anthropic's maximum of 1.
"""

from __future__ import annotations

import json
from typing import Any

from core.types import ChatRequest, Message
from workers.providers.errors import InvalidRequest

JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header.removeprefix("data:").split(";")[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(message: Message) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    blocks: list[dict[str, Any]] = []
    for part in message.content or []:
        if part.type == "text":
            blocks.append({"type": "text", "text": part.text or ""})
        elif part.image_url is not None:
            blocks.append(_image_block(part.image_url.url))
    return blocks


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.text():
        blocks.append({"type": "text", "text": message.text()})
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"tool call {call.id} has arguments that are not JSON: {exc}") from exc
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def to_anthropic_params(request: ChatRequest, model: str, default_max_tokens: int) -> dict[str, Any]:
    """Our request as keyword arguments for `messages.create`."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append(message.text())
            continue
        if message.role == "tool":
            role = "user"
            result = {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}
            blocks = [result]
        elif message.role == "assistant":
            role, blocks = "assistant", _assistant_blocks(message)
        else:
            role, blocks = "user", _user_blocks(message)
        if turns and turns[-1]["role"] == role:  # the API wants alternating turns
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    params: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": request.max_tokens or default_max_tokens,
    }
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        system.append(JSON_INSTRUCTION)
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        params["output_config"] = {"format": {"type": "json_schema", "schema": fmt.json_schema.schema_}}
    if system:
        params["system"] = "\n\n".join(system)
    if request.stop:
        params["stop_sequences"] = request.stop
    sampling: dict[str, Any] = {}
    if request.temperature is not None:
        sampling["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    elif request.top_p is not None:
        sampling["top_p"] = request.top_p
    if sampling:
        params["extra_body"] = sampling
    if request.tools:
        params["tools"] = [
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "input_schema": t.function.parameters,
            }
            for t in request.tools
        ]
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            params["tool_choice"] = choice
    return params


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"type": "tool", "name": name} if name else {"type": "auto"}
    return {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}[choice]
