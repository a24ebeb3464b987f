"""The OpenAI adapter through the real openai SDK against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmqueue.types import ChatRequest, FinishReason
from routing.catalog import get_catalog
from tests.conftest import EmulatorHandle
from workers.providers import errors
from workers.providers.base import resolve_target
from workers.providers.openai import OpenAIProvider


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def provider(emulator: EmulatorHandle) -> OpenAIProvider:
    dep = get_catalog().deployment("openai/gpt-4o-mini")
    assert dep is not None
    target = resolve_target(
        dep, emulator_url=emulator.url, emulator_mode="always", emulator_path=OpenAIProvider.emulator_path
    )
    return OpenAIProvider(target)


async def complete(p: OpenAIProvider, request: ChatRequest, sink=None):  # type: ignore[no-untyped-def]
    try:
        return await p.complete(request, on_text=sink)
    finally:
        await p.aclose()


def req(**kw) -> ChatRequest:  # type: ignore[no-untyped-def]
    kw.setdefault("messages", [{"role": "user", "content": "Tell me about the sea"}])
    return ChatRequest.model_validate(kw)


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req()))
    assert "Tell me about the sea" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.provider_request_id
    assert "x-ratelimit-limit-requests" in r.rate_limit_headers


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    r = run(
        complete(
            provider(emulator),
            req(
                messages=[
                    {"role": "system", "content": "Be brief"},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": "second question"},
                ]
            ),
        )
    )
    assert "second question" in r.text


def test_tool_call_round_trip(emulator: EmulatorHandle) -> None:
    tools = [
        {
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        }
    ]
    first = run(complete(provider(emulator), req(tools=tools)))
    assert first.finish_reason is FinishReason.TOOL_CALLS
    call = first.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}
    second = run(
        complete(
            provider(emulator),
            req(
                tools=tools,
                messages=[
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
                ],
            ),
        )
    )
    assert second.finish_reason is FinishReason.STOP
    assert "sunny, 21C" in second.text


def test_json_mode(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req(response_format={"type": "json_object"})))
    assert isinstance(json.loads(r.text), dict)


def test_image_input(emulator: EmulatorHandle) -> None:
    r = run(
        complete(
            provider(emulator),
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is in this picture"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        ],
                    }
                ]
            ),
        )
    )
    assert r.usage.input_tokens > 85


def test_streaming_delivers_deltas(emulator: EmulatorHandle) -> None:
    got: list[str] = []

    async def sink(delta: str) -> None:
        got.append(delta)

    r = run(complete(provider(emulator), req(), sink))
    assert len(got) > 3
    assert "".join(got) == r.text
    assert r.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"status": 429, "retry_after": 2.5}, errors.RateLimited),
        (
            {"status": 429, "code": "insufficient_quota", "message": "You exceeded your quota"},
            errors.QuotaExhausted,
        ),
        ({"status": 500}, errors.Transient),
        ({"status": 503}, errors.Transient),
        ({"status": 400, "message": "bad temperature"}, errors.InvalidRequest),
        ({"status": 400, "code": "context_length_exceeded", "message": "too long"}, errors.ContextTooLong),
        ({"status": 400, "code": "content_filter", "message": "filtered"}, errors.ContentFiltered),
        ({"status": 401}, errors.AuthError),
        ({"status": 403}, errors.AuthError),
    ],
)
def test_errors_are_mapped(emulator: EmulatorHandle, script: dict, expected: type) -> None:  # type: ignore[type-arg]
    emulator.configure({"openai": {"script": [script]}})
    with pytest.raises(expected) as info:
        run(complete(provider(emulator), req()))
    if expected is errors.RateLimited:
        assert info.value.retry_after == 2.5
    if script.get("message"):
        assert script["message"] in info.value.message


def test_connection_refused_is_transient(emulator: EmulatorHandle) -> None:
    dep = get_catalog().deployment("openai/gpt-4o-mini")
    assert dep is not None
    target = resolve_target(
        dep, emulator_url="http://127.0.0.1:9", emulator_mode="always", emulator_path="/openai/v1"
    )
    with pytest.raises(errors.Transient):
        run(complete(OpenAIProvider(target), req()))


def test_missing_key_names_the_variable() -> None:
    dep = get_catalog().deployment("openai/gpt-4o-mini")
    assert dep is not None
    with pytest.raises(errors.MissingCredentials, match="OPENAI_API_KEY"):
        resolve_target(dep, emulator_url=None, environ={})
