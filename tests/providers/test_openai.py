"""The OpenAI adapter through the real openai SDK against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import EmulatorHandle
from tests.providers.support import complete, emulated, req, run, tool_round_trip
from workers.providers import errors
from workers.providers.openai import OpenAIProvider

DEPLOYMENT = "openai/gpt-4o-mini"


def provider(emulator: EmulatorHandle) -> OpenAIProvider:
    return emulated(OpenAIProvider, DEPLOYMENT, emulator.url)


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
    tool_round_trip(lambda request: run(complete(provider(emulator), request)))


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


def test_timeout_is_transient(emulator: EmulatorHandle) -> None:
    # a real timeout still says so: only a refused connect behind the SDK's ConnectTimeout does not
    emulator.configure({"openai": {"latency_ms": 1500}})
    with pytest.raises(errors.Transient, match="timed out"):
        run(complete(emulated(OpenAIProvider, DEPLOYMENT, emulator.url, timeout_s=0.3), req()))
