"""Our OpenAI-shaped chat request as Gemini's `contents` and `GenerateContentConfig` (used by
the online adapter, `gemini.py`, and by batch mode, `gemini_batch.py`).

System and developer messages become `system_instruction`; assistant turns become `model`
turns with `function_call` parts; tool results become `function_response` parts, named after
the call they answer (Gemini matches results by name); images become `inline_data` (data:
URLs) or `file_data` (http URLs); JSON mode is `response_mime_type` plus
`response_json_schema`.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from typing import Any

from google.genai import types

from core.types import ChatRequest, ContentPart, Message
from workers.providers.errors import InvalidRequest

GENERATED_ID_PREFIX = "call_llmq_"  # ids we made up because Gemini sent none: never sent back
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _image_part(part: ContentPart) -> types.Part:
    assert part.image_url is not None
    url = part.image_url.url
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0] or "image/png"
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"image data URL is not valid base64: {exc}") from None
        return types.Part(inline_data=types.Blob(data=data, mime_type=mime))
    mime = mimetypes.guess_type(url.split("?")[0])[0] or "image/jpeg"
    return types.Part(file_data=types.FileData(file_uri=url, mime_type=mime))


def _tool_result(content: str) -> dict[str, Any]:
    try:
        parsed = json.loads(content)
    except ValueError:
        return {"result": content}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def _arguments(arguments: str) -> dict[str, Any]:
    try:
        args = json.loads(arguments or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"tool call arguments are not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object")
    return args


def _parts(message: Message, call_names: dict[str, str]) -> list[types.Part]:
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        response = types.FunctionResponse(
            name=call_names.get(call_id, call_id),
            response=_tool_result(message.text()),
            id=None if call_id.startswith(GENERATED_ID_PREFIX) else call_id,
        )
        return [types.Part(function_response=response)]
    parts: list[types.Part] = []
    if isinstance(message.content, list):
        for item in message.content:
            parts.append(types.Part(text=item.text) if item.type == "text" else _image_part(item))
    elif message.content:
        parts.append(types.Part(text=message.content))
    for tc in message.tool_calls or []:
        call_names[tc.id] = tc.function.name
        args = _arguments(tc.function.arguments)
        sent_id = None if tc.id.startswith(GENERATED_ID_PREFIX) else tc.id
        parts.append(
            types.Part(function_call=types.FunctionCall(name=tc.function.name, args=args, id=sent_id))
        )
    return parts


def to_gemini_contents(request: ChatRequest) -> tuple[list[types.Content], str | None]:
    """Gemini's `contents` (adjacent turns of one role merged) and the system instruction."""
    system: list[str] = []
    contents: list[types.Content] = []
    call_names: dict[str, str] = {}
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append(message.text())
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message, call_names)
        if contents and contents[-1].role == role:
            contents[-1].parts = [*(contents[-1].parts or []), *parts]
        else:
            contents.append(types.Content(role=role, parts=parts))
    return contents, "\n\n".join(system) if system else None


def to_gemini_config(request: ChatRequest, system: str | None) -> types.GenerateContentConfig:
    config = types.GenerateContentConfig(
        system_instruction=system,
        max_output_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop_sequences=request.stop,
        seed=request.seed,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    if request.tools:
        declarations = [
            types.FunctionDeclaration(
                name=t.function.name,
                description=t.function.description,
                parameters_json_schema=t.function.parameters,
            )
            for t in request.tools
        ]
        config.tools = [types.Tool(function_declarations=declarations)]
    choice = request.tool_choice
    if choice is not None:
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        mode = TOOL_MODES[choice] if isinstance(choice, str) else "ANY"
        calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=[name] if name else None)
        config.tool_config = types.ToolConfig(function_calling_config=calling)
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config.response_mime_type = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            config.response_json_schema = fmt.json_schema.schema_
    return config
