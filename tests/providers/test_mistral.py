"""The Mistral adapter through the real mistralai SDK against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mistralai.client import models

from core.types import FinishReason, Usage
from emulator.core import count_tokens
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    TOOLS,
    complete,
    emulated,
    no_text_expected,
    raises_mapped,
    req,
    run,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.mistral import MistralProvider, usage_from_mistral
from workers.providers.mistral_request import mistral_tool_id, to_mistral_params

DEPLOYMENT = "mistral/mistral-small"


def provider(emulator: EmulatorHandle) -> MistralProvider:
    return emulated(MistralProvider, DEPLOYMENT, emulator.url)


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req()))
    assert "Tell me about the sea" in r.text
    assert "mistral-small-latest" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens == count_tokens("Tell me about the sea") + 4
    assert r.usage.output_tokens == count_tokens(r.text)
    assert r.usage.cached_input_tokens == 0
    assert r.provider_request_id
    assert r.model == "mistral-small-latest"
    assert "x-ratelimitbysize-remaining-minute" in r.rate_limit_headers
    assert len(emulator.calls(provider="mistral")) == 1


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    messages = [
        {"role": "developer", "content": "Be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    params = to_mistral_params(req(messages=messages, seed=7), "mistral-small-latest")
    assert [m["role"] for m in params["messages"]] == ["system", "user", "assistant", "user"]
    assert params["random_seed"] == 7
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
    call = tool_round_trip(lambda request: run(complete(provider(emulator), request)), tool_choice="required")
    assert len(call.id) == 9


def test_foreign_tool_call_ids_are_mapped_consistently(emulator: EmulatorHandle) -> None:
    foreign = {"id": "call_abc123XYZ_from_openai", "function": {"name": "get_weather", "arguments": "{}"}}
    request = req(
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "tool_calls": [foreign]},
            {"role": "tool", "tool_call_id": foreign["id"], "content": "sunny, 21C"},
        ],
    )
    params = to_mistral_params(request, "m")
    mapped = mistral_tool_id(str(foreign["id"]))
    assert params["messages"][1]["tool_calls"][0]["id"] == mapped == params["messages"][2]["tool_call_id"]
    assert params["messages"][2]["name"] == "get_weather"
    assert mistral_tool_id("abcDEF123") == "abcDEF123"
    r = run(complete(provider(emulator), request))
    assert "sunny, 21C" in r.text


def test_json_mode(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req(response_format={"type": "json_object"})))
    assert isinstance(json.loads(r.text), dict)


def test_json_schema(emulator: EmulatorHandle) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}}
    r = run(
        complete(
            provider(emulator),
            req(response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": schema}}),
        )
    )
    assert json.loads(r.text) == {"title": "example", "year": 42}


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


def test_streamed_tool_call_id_is_nine_characters(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req(tools=TOOLS), no_text_expected))
    assert len(r.tool_calls[0].id) == 9


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"status": 502}, errors.Transient),
        ({"status": 529}, errors.Transient),
        ({"status": 422, "message": "unknown field"}, errors.InvalidRequest),
    ],
)
def test_mistral_statuses_are_mapped(
    emulator: EmulatorHandle, script: dict[str, Any], expected: type[errors.ProviderError]
) -> None:
    emulator.configure({"mistral": {"script": [script]}})
    err = raises_mapped(script, expected, lambda: run(complete(provider(emulator), req())))
    assert err.status_code == script["status"]
    assert err.provider_request_id


def test_cached_tokens_are_read_from_prompt_tokens_details() -> None:
    usage = models.UsageInfo.model_validate(
        {
            "prompt_tokens": 30,
            "completion_tokens": 2,
            "total_tokens": 32,
            "prompt_tokens_details": {"cached_tokens": 20},
        }
    )
    assert usage_from_mistral(usage) == Usage(input_tokens=30, output_tokens=2, cached_input_tokens=20)
