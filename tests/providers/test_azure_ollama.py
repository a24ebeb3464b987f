"""Azure OpenAI, Ollama and OpenAI-compatible adapters through the real openai SDK against the emulator.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import json

import pytest

from core.types import ChatRequest, ChatResponse
from routing.catalog import Deployment
from tests.conftest import EmulatorHandle
from tests.providers import support
from tests.providers.support import (
    complete_fresh,
    emulated,
    raises_mapped,
    req,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.azure import AzureOpenAIProvider
from workers.providers.base import Target, TextSink, resolve_target
from workers.providers.ollama import CompatibleProvider, OllamaProvider


def deployment(kind: str) -> Deployment:
    if kind == "compatible":
        return support.compatible_deployment()
    return support.deployment({"azure": "azure/gpt-4o-mini", "ollama": "ollama/llama3.2"}[kind])


CLASSES: dict[str, type[AzureOpenAIProvider] | type[OllamaProvider] | type[CompatibleProvider]] = {
    "azure": AzureOpenAIProvider,
    "ollama": OllamaProvider,
    "compatible": CompatibleProvider,
}
KINDS = list(CLASSES)


def complete(kind: str, url: str, request: ChatRequest, sink: TextSink | None = None) -> ChatResponse:
    return complete_fresh(lambda: emulated(CLASSES[kind], deployment(kind), url), request, sink)


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


def test_azure_content_filter_keeps_azures_message(emulator: EmulatorHandle) -> None:
    script = {
        "status": 400,
        "code": "content_filter",
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy.",
    }
    emulator.configure({"azure": {"script": [script]}})
    raises_mapped(script, errors.ContentFiltered, lambda: complete("azure", emulator.url, req()))


def test_local_endpoints_give_the_sdk_a_placeholder_key() -> None:
    for kind, env in (("ollama", {"OLLAMA_HOST": "localhost:11434"}), ("compatible", {})):
        t = resolve_target(deployment(kind), emulator_url=None, environ=env)
        assert t.api_key is None
        assert CLASSES[kind](t).client.api_key  # the SDK refuses to build without one


def test_ollama_is_used_only_once_ollama_host_says_where() -> None:
    with pytest.raises(errors.MissingCredentials, match="OLLAMA_HOST"):
        resolve_target(deployment("ollama"), emulator_url=None, environ={})
    t = resolve_target(deployment("ollama"), emulator_url=None, environ={"OLLAMA_HOST": "gpu-box:11434"})
    assert t.base_url == "http://gpu-box:11434/v1"
    # In auto mode the emulator stands in for what is not configured.
    assert resolve_target(
        deployment("ollama"), emulator_url="http://emu", emulator_mode="auto", environ={}
    ).emulated


def test_the_example_azure_resource_is_a_placeholder_until_an_endpoint_is_set() -> None:
    env = {"AZURE_OPENAI_API_KEY": "k"}
    with pytest.raises(errors.MissingCredentials, match="AZURE_OPENAI_ENDPOINT"):
        resolve_target(deployment("azure"), emulator_url=None, environ=env)
    real = {**env, "AZURE_OPENAI_ENDPOINT": "https://mine.openai.azure.com"}
    t = resolve_target(deployment("azure"), emulator_url=None, environ=real)
    assert t.base_url == "https://mine.openai.azure.com" and t.api_key == "k"


def test_compatible_without_base_url_says_so() -> None:
    dep = deployment("compatible")
    t = Target(dep, None, None, 30.0, False)
    with pytest.raises(ValueError, match="needs base_url"):
        CompatibleProvider(t)
