"""The Cohere adapter through the real cohere SDK (v2 chat) against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import json
from typing import Any

import cohere
import pytest

from core.types import FinishReason, Usage
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
from workers.providers.cohere import CohereProvider, to_cohere_params, usage_from_cohere

DEPLOYMENT = "cohere/command-r7b"


def provider(emulator: EmulatorHandle) -> CohereProvider:
    return emulated(CohereProvider, DEPLOYMENT, emulator.url)


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = run(complete(provider(emulator), req()))
    assert "Tell me about the sea" in r.text
    assert "command-r7b-12-2024" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens == count_tokens("Tell me about the sea") + 4
    assert r.usage.output_tokens == count_tokens(r.text)
    assert r.provider_request_id
    assert r.model == "command-r7b-12-2024"
    assert "x-trial-endpoint-call-limit" in r.rate_limit_headers
    assert len(emulator.calls(provider="cohere")) == 1


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    messages = [
        {"role": "developer", "content": "Be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    params = to_cohere_params(req(messages=messages), "command-r7b-12-2024")
    assert [m["role"] for m in params["messages"]] == ["system", "user", "assistant", "user"]
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
    tool_round_trip(lambda request: run(complete(provider(emulator), request)))


def test_tool_choice_translation() -> None:
    tools = [*TOOLS, {"function": {"name": "other"}}]
    named = to_cohere_params(
        req(tools=tools, tool_choice={"type": "function", "function": {"name": "other"}}), "m"
    )
    assert [t["function"]["name"] for t in named["tools"]] == ["other"]
    assert named["tool_choice"] == "REQUIRED"
    assert to_cohere_params(req(tools=tools, tool_choice="none"), "m")["tool_choice"] == "NONE"
    assert "tool_choice" not in to_cohere_params(req(tools=tools, tool_choice="auto"), "m")


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


def test_image_input_is_refused_by_a_model_without_vision(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.InvalidRequest, match="does not support image"):
        run(
            complete(
                provider(emulator),
                req(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "what is in this picture"},
                                {
                                    "type": "image_url",
                                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                                },
                            ],
                        }
                    ]
                ),
            )
        )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"status": 529}, errors.Transient),
        ({"status": 422, "message": "unknown field"}, errors.InvalidRequest),
        ({"status": 498}, errors.AuthError),  # Cohere's invalid token
    ],
)
def test_cohere_statuses_are_mapped(
    emulator: EmulatorHandle, script: dict[str, Any], expected: type[errors.ProviderError]
) -> None:
    emulator.configure({"cohere": {"script": [script]}})
    err = raises_mapped(script, expected, lambda: run(complete(provider(emulator), req())))
    assert err.status_code == script["status"]
    assert err.provider_request_id


def test_billed_units_and_cached_tokens_are_read() -> None:
    usage = cohere.Usage.model_validate(
        {
            "billed_units": {"input_tokens": 12, "output_tokens": 7},
            "tokens": {"input_tokens": 80, "output_tokens": 7},
            "cached_tokens": 4,
        }
    )
    assert usage_from_cohere(usage) == Usage(input_tokens=12, output_tokens=7, cached_input_tokens=4)
