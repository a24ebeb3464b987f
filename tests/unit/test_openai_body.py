"""The chat body a provider worker posts as it is (`OpenAIProvider.complete` skips the SDK's
request transform): the transform would leave it unchanged, for every field we send."""

from __future__ import annotations

import asyncio
from typing import Any

from openai._utils._transform import async_maybe_transform
from openai.types.chat import completion_create_params

from core.types import ChatRequest
from workers.providers.openai import to_openai_params

RICH = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "user", "content": "And now?", "name": "ann"},
    ],
    "max_tokens": 64,
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": ["\n\n"],
    "seed": 7,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "look",
                "description": "Look again",
                "parameters": {"type": "object", "properties": {"at": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "look"}},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
}


def transformed(params: dict[str, Any]) -> Any:
    return asyncio.run(
        async_maybe_transform(params, completion_create_params.CompletionCreateParamsNonStreaming)
    )


def test_the_sdk_transform_leaves_a_rich_body_unchanged() -> None:
    params = to_openai_params(ChatRequest.model_validate(RICH), "gpt-4o-mini")
    assert params["response_format"]["json_schema"]["schema"] == {"type": "object"}  # by alias
    assert transformed(params) == params


def test_the_sdk_transform_leaves_a_plain_body_unchanged() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    params = to_openai_params(ChatRequest.model_validate(plain), "gpt-4o-mini")
    assert transformed(params) == params
