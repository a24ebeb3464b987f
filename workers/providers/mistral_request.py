"""Our OpenAI-shaped chat request as keyword arguments for Mistral's `chat.complete_async` and
`chat.stream_async` (used by the online adapter, `mistral.py`, and by batch mode,
`mistral_batch.py`).

Mistral's shape is close to ours: developer messages become system ones, `seed` becomes
`random_seed`, `tool_choice` `required` becomes `any`. Mistral accepts only tool-call ids of
nine letters or digits, so ids that came from another provider (a failover mid-conversation)
are mapped to a stable nine-character hash, the same on the assistant's call and on the
tool's answer.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from core.types import ChatRequest
from workers.providers.base import openai_style_content

TOOL_ID = re.compile(r"[A-Za-z0-9]{9}")


def mistral_tool_id(call_id: str | None) -> str:
    """The id itself if Mistral accepts it, else a stable nine-character stand-in."""
    if call_id and TOOL_ID.fullmatch(call_id):
        return call_id
    return hashlib.sha256((call_id or "").encode()).hexdigest()[:9]


def to_mistral_params(request: ChatRequest, model: str) -> dict[str, Any]:
    """Our request as keyword arguments for `chat.complete_async` / `chat.stream_async`."""
    messages: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}
    for m in request.messages:
        if m.role in ("system", "developer"):
            messages.append({"role": "system", "content": m.text()})
        elif m.role == "assistant":
            out: dict[str, Any] = {"role": "assistant", "content": m.text() or None}
            if m.tool_calls:
                tool_names.update({c.id: c.function.name for c in m.tool_calls})
                out["tool_calls"] = [
                    {
                        "id": mistral_tool_id(c.id),
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in m.tool_calls
                ]
            messages.append(out)
        elif m.role == "tool":
            tool: dict[str, Any] = {
                "role": "tool",
                "content": m.text(),
                "tool_call_id": mistral_tool_id(m.tool_call_id),
            }
            name = m.name or tool_names.get(m.tool_call_id or "")
            if name:
                tool["name"] = name
            messages.append(tool)
        else:
            messages.append({"role": "user", "content": openai_style_content(m)})
    params: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        params["tools"] = [
            {"type": "function", "function": t.function.model_dump(exclude_none=True)} for t in request.tools
        ]
        choice = request.tool_choice
        if choice is not None:
            params["tool_choice"] = "any" if choice == "required" else choice
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        params["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        schema: dict[str, Any] = {"name": fmt.json_schema.name, "schema": fmt.json_schema.schema_}
        if fmt.json_schema.strict is not None:
            schema["strict"] = fmt.json_schema.strict
        params["response_format"] = {"type": "json_schema", "json_schema": schema}
    sampling = [
        ("max_tokens", request.max_tokens),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop", request.stop),
        ("random_seed", request.seed),
    ]
    params.update({name: value for name, value in sampling if value is not None})
    return params
