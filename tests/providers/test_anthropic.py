"""The Anthropic adapter through the real anthropic SDK against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import json

import anthropic

from core.types import FinishReason
from emulator.core import count_tokens
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    TOOLS,
    complete,
    emulated,
    raises_mapped,
    req,
    run,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.anthropic import AnthropicProvider, from_anthropic_message
from workers.providers.anthropic_request import to_anthropic_params

DEPLOYMENT = "anthropic/claude-haiku-4-5"


def provider(emulator: EmulatorHandle) -> AnthropicProvider:
    return emulated(AnthropicProvider, DEPLOYMENT, emulator.url)


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req()))
    assert "Tell me about the sea" in r.text
    assert "claude-haiku-4-5" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens == count_tokens("Tell me about the sea") + 4
    assert r.usage.output_tokens == count_tokens(r.text)
    assert r.usage.cached_input_tokens == 0
    assert r.provider_request_id and r.provider_request_id.startswith("req_")
    assert r.model == "claude-haiku-4-5"
    assert "anthropic-ratelimit-requests-limit" in r.rate_limit_headers
    assert len(emulator.calls(provider="anthropic")) == 1


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    params = to_anthropic_params(req(messages=messages), "claude-haiku-4-5", 64000)
    assert params["system"] == "Be brief"
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    r = run(
        complete(provider(emulator), req(messages=messages, temperature=0.2, top_p=0.9, stop=["END"], seed=1))
    )
    assert "second question" in r.text
    texts = ["Be brief", "first question", "first answer", "second question"]
    assert r.usage.input_tokens == sum(count_tokens(t) + 4 for t in texts)


def test_max_tokens_truncates_with_length(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req(max_tokens=3)))
    assert r.finish_reason is FinishReason.LENGTH
    assert r.usage.output_tokens == 3


def test_tool_call_round_trip(emulator: EmulatorHandle) -> None:
    call = tool_round_trip(lambda request: run(complete(provider(emulator), request)))
    assert call.id.startswith("toolu_")


def test_tool_choice_none_answers_in_text(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req(tools=TOOLS, tool_choice="none")))
    assert r.finish_reason is FinishReason.STOP and not r.tool_calls


def test_json_mode_by_instruction(emulator: EmulatorHandle) -> None:
    request = req(response_format={"type": "json_object"})
    assert "JSON object" in to_anthropic_params(request, "m", 10)["system"]
    r = run(complete(provider(emulator), request))
    assert isinstance(json.loads(r.text), dict)


def test_image_input_base64_and_url(emulator: EmulatorHandle) -> None:
    request = req(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in these pictures"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ]
    )
    blocks = to_anthropic_params(request, "m", 10)["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    r = run(complete(provider(emulator), request))
    assert r.usage.input_tokens > 2 * 85


def test_overloaded_529_is_transient(emulator: EmulatorHandle) -> None:
    script = {"status": 529}
    emulator.configure({"anthropic": {"script": [script]}})
    err = raises_mapped(script, errors.Transient, lambda: run(complete(provider(emulator), req())))
    assert err.status_code == 529
    assert err.provider_request_id


def test_cached_tokens_count_as_input_and_refusal_is_content_filter() -> None:
    message = anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "I can't help with that."}],
            "stop_reason": "refusal",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 90,
                "cache_creation_input_tokens": 20,
            },
        }
    )
    r = from_anthropic_message(message)
    assert r.finish_reason is FinishReason.CONTENT_FILTER
    assert (r.usage.input_tokens, r.usage.cached_input_tokens, r.usage.output_tokens) == (120, 90, 5)
