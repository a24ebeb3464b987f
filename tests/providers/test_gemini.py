"""The Gemini adapter through the real google-genai SDK against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py;
here is what is Gemini's own (a 429 without RetryInfo, thinking tokens, SAFETY finishes, ...).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import types

from core.types import ChatRequest, ChatResponse, FinishReason
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    TOOLS,
    complete_fresh,
    emulated,
    req,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.base import TextSink
from workers.providers.gemini import GeminiProvider, from_gemini_response, usage_from_gemini


def provider(url: str, deployment: str = "gemini/gemini-2.5-flash", timeout_s: float = 30) -> GeminiProvider:
    return emulated(GeminiProvider, deployment, url, timeout_s)


def complete(url: str, request: ChatRequest, sink: TextSink | None = None, **kw: Any) -> ChatResponse:
    return complete_fresh(lambda: provider(url, **kw), request, sink)


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req())
    assert "Tell me about the sea" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens > 0
    # gemini-2.5-flash thinks by default: thoughts are output tokens and reported as reasoning
    assert r.usage.reasoning_tokens > 0 and r.usage.output_tokens > r.usage.reasoning_tokens
    assert r.provider_request_id and r.model == "gemini-2.5-flash"
    assert emulator.calls(provider="gemini")[0]["model"] == "gemini-2.5-flash"


def test_lite_model_reports_no_thinking(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req(), deployment="gemini/gemini-2.5-flash-lite")
    assert r.usage.reasoning_tokens == 0 and r.usage.output_tokens > 0


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    r = complete(
        emulator.url,
        req(
            messages=[
                {"role": "system", "content": "Be brief"},
                {"role": "developer", "content": "Use plain words"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ]
        ),
    )
    assert "second question" in r.text


def test_tool_call_round_trip(emulator: EmulatorHandle) -> None:
    tool_round_trip(lambda request: complete(emulator.url, request), tool_choice="auto")


def test_tool_choice_none_answers_in_text(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req(tools=TOOLS, tool_choice="none"))
    assert r.tool_calls == [] and r.finish_reason is FinishReason.STOP


def test_json_mode(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req(response_format={"type": "json_object"}))
    assert isinstance(json.loads(r.text), dict)


def test_json_schema(emulator: EmulatorHandle) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}}
    r = complete(
        emulator.url,
        req(response_format={"type": "json_schema", "json_schema": {"name": "book", "schema": schema}}),
    )
    assert json.loads(r.text) == {"title": "example", "year": 42}


def test_image_input(emulator: EmulatorHandle) -> None:
    r = complete(
        emulator.url,
        req(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is in this picture"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        ),
    )
    assert r.usage.input_tokens > 2 * 85


def test_bad_image_data_is_invalid(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.InvalidRequest):
        complete(
            emulator.url,
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}
                        ],
                    }
                ]
            ),
        )


def test_usage_counts_cache_and_thoughts() -> None:
    meta = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=1000,
        cached_content_token_count=800,
        candidates_token_count=50,
        thoughts_token_count=30,
        tool_use_prompt_token_count=5,
    )
    u = usage_from_gemini(meta)
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens) == (1005, 800, 80, 30)


def test_safety_finish() -> None:
    def response(parts: list[dict[str, Any]]) -> Any:
        return types.GenerateContentResponse.model_validate(
            {"candidates": [{"content": {"role": "model", "parts": parts}, "finish_reason": "SAFETY"}]}
        )

    with pytest.raises(errors.ContentFiltered):
        from_gemini_response(response([]))
    partial = from_gemini_response(response([{"text": "Once upon"}]))
    assert partial.finish_reason is FinishReason.CONTENT_FILTER and partial.text == "Once upon"


def test_rate_limit_without_retry_info(emulator: EmulatorHandle) -> None:
    emulator.configure({"gemini": {"script": [{"status": 429}]}})
    with pytest.raises(errors.RateLimited) as info:
        complete(emulator.url, req())
    assert info.value.retry_after is None


def test_timeout_is_transient(emulator: EmulatorHandle) -> None:
    emulator.configure({"gemini": {"latency_ms": 1500}})
    with pytest.raises(errors.Transient, match="timed out"):
        complete(emulator.url, req(), timeout_s=0.3)
