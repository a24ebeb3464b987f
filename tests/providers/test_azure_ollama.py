"""Azure OpenAI, Ollama and OpenAI-compatible adapters through the real openai SDK against the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.types import ChatRequest, ChatResponse, FinishReason
from routing.catalog import Deployment, catalog_from_dict
from tests.conftest import EmulatorHandle
from tests.providers import support
from tests.providers.support import (
    REFUSED_URL,
    Collector,
    complete_fresh,
    emulated,
    raises_mapped,
    req,
    tool_round_trip,
)
from workers.providers import adapter_class, errors
from workers.providers.azure import AzureOpenAIProvider
from workers.providers.base import Target, TextSink, resolve_target
from workers.providers.ollama import CompatibleProvider, OllamaProvider

COMPATIBLE_CATALOG = catalog_from_dict(
    {
        "models": [
            {
                "id": "qwen2.5-7b",
                "provider": "compatible",
                "context_window": 32768,
                "max_output_tokens": 4096,
                "input_price": 0,
                "output_price": 0,
                "quality": 40,
                "capabilities": ["tools", "json_mode"],
            }
        ],
        "deployments": [{"name": "vllm/qwen", "model": "qwen2.5-7b", "base_url": "http://localhost:8000/v1"}],
    }
)


def deployment(kind: str) -> Deployment:
    if kind == "compatible":
        dep = COMPATIBLE_CATALOG.deployment("vllm/qwen")
    else:
        dep = support.deployment({"azure": "azure/gpt-4o-mini", "ollama": "ollama/llama3.2"}[kind])
    assert dep is not None
    return dep


CLASSES: dict[str, type[AzureOpenAIProvider] | type[OllamaProvider] | type[CompatibleProvider]] = {
    "azure": AzureOpenAIProvider,
    "ollama": OllamaProvider,
    "compatible": CompatibleProvider,
}
KINDS = list(CLASSES)


def complete(kind: str, url: str, request: ChatRequest, sink: TextSink | None = None) -> ChatResponse:
    return complete_fresh(lambda: emulated(CLASSES[kind], deployment(kind), url), request, sink)


@pytest.mark.parametrize("kind", KINDS)
def test_registry_finds_the_adapter(kind: str) -> None:
    assert adapter_class(kind) is CLASSES[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_plain_text_with_usage(emulator: EmulatorHandle, kind: str) -> None:
    r = complete(kind, emulator.url, req())
    assert "Tell me about the sea" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.provider_request_id
    assert "x-ratelimit-limit-requests" in r.rate_limit_headers
    (call,) = emulator.calls()
    assert call["provider"] == kind


def test_azure_calls_the_deployment_by_its_provider_model(emulator: EmulatorHandle) -> None:
    dep = deployment("azure")
    assert dep.spec.api_version and dep.provider_model == "gpt-4o-mini"
    complete("azure", emulator.url, req())
    assert emulator.calls(provider="azure")[0]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("kind", KINDS)
def test_system_prompt_and_multi_turn(emulator: EmulatorHandle, kind: str) -> None:
    r = complete(
        kind,
        emulator.url,
        req(
            messages=[
                {"role": "system", "content": "Be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ]
        ),
    )
    assert "second question" in r.text


@pytest.mark.parametrize("kind", KINDS)
def test_tool_call_round_trip(emulator: EmulatorHandle, kind: str) -> None:
    tool_round_trip(lambda request: complete(kind, emulator.url, request))


@pytest.mark.parametrize("kind", KINDS)
def test_json_mode(emulator: EmulatorHandle, kind: str) -> None:
    r = complete(kind, emulator.url, req(response_format={"type": "json_object"}))
    assert isinstance(json.loads(r.text), dict)


def test_azure_image_input(emulator: EmulatorHandle) -> None:
    r = complete(
        "azure",
        emulator.url,
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
    assert r.usage.input_tokens > 85


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_delivers_deltas(emulator: EmulatorHandle, kind: str) -> None:
    sink = Collector()
    r = complete(kind, emulator.url, req(), sink)
    assert len(sink.deltas) > 3
    assert sink.text == r.text
    assert r.usage.output_tokens > 0


ERROR_CASES = [
    ({"status": 429, "retry_after": 2.5}, errors.RateLimited),
    (
        {"status": 429, "code": "insufficient_quota", "message": "You exceeded your quota"},
        errors.QuotaExhausted,
    ),
    ({"status": 500}, errors.Transient),
    ({"status": 503}, errors.Transient),
    ({"status": 400, "message": "bad temperature"}, errors.InvalidRequest),
    ({"status": 400, "code": "context_length_exceeded", "message": "too long"}, errors.ContextTooLong),
    (
        {
            "status": 400,
            "code": "content_filter",
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy.",
        },
        errors.ContentFiltered,
    ),
    ({"status": 401}, errors.AuthError),
    ({"status": 403}, errors.AuthError),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("script", "expected"), ERROR_CASES)
def test_errors_are_mapped(
    emulator: EmulatorHandle, kind: str, script: dict[str, Any], expected: type[errors.ProviderError]
) -> None:
    emulator.configure({kind: {"script": [script]}})
    raises_mapped(script, expected, lambda: complete(kind, emulator.url, req()))


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_transient(kind: str) -> None:
    with pytest.raises(errors.Transient):
        complete(kind, REFUSED_URL, req())


def test_local_endpoints_need_no_key() -> None:
    for kind in ("ollama", "compatible"):
        t = resolve_target(deployment(kind), emulator_url=None, environ={})
        assert t.api_key is None and not t.emulated
        assert CLASSES[kind](t).client.api_key  # a placeholder: the SDK requires one


def test_compatible_without_base_url_says_so() -> None:
    dep = deployment("compatible")
    t = Target(dep, None, None, 30.0, False)
    with pytest.raises(ValueError, match="needs base_url"):
        CompatibleProvider(t)


def test_azure_missing_key_names_the_variable() -> None:
    with pytest.raises(errors.MissingCredentials, match="AZURE_OPENAI_API_KEY"):
        resolve_target(deployment("azure"), emulator_url=None, environ={})
