"""The OpenAI adapter through the real openai SDK against the emulator over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.types import FinishReason
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    REFUSED_URL,
    Collector,
    complete,
    deployment,
    emulated,
    raises_mapped,
    req,
    run,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.base import resolve_target
from workers.providers.openai import OpenAIProvider

DEPLOYMENT = "openai/gpt-4o-mini"


def provider(emulator: EmulatorHandle) -> OpenAIProvider:
    return emulated(OpenAIProvider, DEPLOYMENT, emulator.url)


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


def test_streaming_delivers_deltas(emulator: EmulatorHandle) -> None:
    sink = Collector()
    r = run(complete(provider(emulator), req(), sink))
    assert len(sink.deltas) > 3
    assert sink.text == r.text
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
def test_errors_are_mapped(
    emulator: EmulatorHandle, script: dict[str, Any], expected: type[errors.ProviderError]
) -> None:
    emulator.configure({"openai": {"script": [script]}})
    raises_mapped(script, expected, lambda: run(complete(provider(emulator), req())), exact_type=False)


def test_connection_refused_is_transient(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.Transient):
        run(complete(emulated(OpenAIProvider, DEPLOYMENT, REFUSED_URL), req()))


def test_missing_key_names_the_variable() -> None:
    dep = deployment(DEPLOYMENT)
    with pytest.raises(errors.MissingCredentials, match="OPENAI_API_KEY"):
        resolve_target(dep, emulator_url=None, environ={})
