"""What every provider adapter must do, checked once for each provider of the provider table.

Each provider in `core/providers.py` PROVIDERS has one representative deployment here (`CASES`),
called through its real SDK against the emulator over HTTP. Every adapter must:

- be the class the registry (`workers.providers.adapter_class`) finds for its provider;
- map the error statuses every provider uses alike (`error_rows`), completed and streamed;
- call a refused connection Transient and say the connection failed (not that it timed out);
- raise MissingCredentials naming its key variable (and the fallbacks) before any call, or,
  for a local endpoint without a key variable, need no key;
- return a streamed tool call whole (id, name, JSON arguments) and stream no text for it;
- stream text whose deltas join to the text the same request gets unstreamed, with usage.

A provider's own cases (Anthropic's 529, Cohere's 498, Bedrock's 408 and exception names,
Gemini's RetryInfo-less 429, Mistral's 502 and 422) stay in its own `test_<provider>.py`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pytest

from core.providers import PROVIDERS, ProviderName
from core.types import ChatRequest, ChatResponse, FinishReason
from routing.catalog import Deployment, get_catalog
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    COMPATIBLE_CATALOG,
    PROMPT,
    REFUSED_URL,
    TOOLS,
    Collector,
    complete_fresh,
    discard,
    emulated,
    no_text_expected,
    req,
)
from workers.providers import adapter_class, errors
from workers.providers.anthropic import AnthropicProvider
from workers.providers.azure import AzureOpenAIProvider
from workers.providers.base import EMULATOR_KEY, Provider, TextSink, resolve_target
from workers.providers.bedrock import BedrockProvider
from workers.providers.cohere import CohereProvider
from workers.providers.gemini import GeminiProvider
from workers.providers.mistral import MistralProvider
from workers.providers.ollama import CompatibleProvider, OllamaProvider
from workers.providers.openai import OpenAIProvider


class RetryAfterOnTheWire(StrEnum):
    """How a provider's 429 tells the client when to come back."""

    HEADER = "retry-after-header"
    RETRY_INFO = "retry-after-in-RetryInfo-body-no-header"  # Gemini: a google.rpc.RetryInfo detail
    NOT_SENT = "no-retry-after-sent"  # Bedrock: a ThrottlingException says nothing of when


@dataclass(frozen=True)
class Case:
    """One provider as the conformance checks see it: a deployment, its adapter, and the few
    ways its wire format legitimately differs from the others."""

    provider: ProviderName
    deployment_name: str
    adapter: type[Provider]
    retry_after: RetryAfterOnTheWire = RetryAfterOnTheWire.HEADER
    quota_status: int = 429  # the HTTP status of its quota-exhausted answer
    auth_401_status: int = 401  # the status a bad key gets (AWS answers it with 403)
    content_filter_status: int | None = 400  # None: a blocked prompt is a 200 saying so
    error_request_id: bool = True  # its error answers carry the provider's request id
    rate_limit_header: str | None = "x-ratelimit-limit-requests"  # one it sends; None: sends none

    @property
    def deployment(self) -> Deployment:
        # the shipped catalog has no OpenAI-compatible endpoint: that one is support's
        catalog = COMPATIBLE_CATALOG if self.provider is ProviderName.COMPATIBLE else get_catalog()
        dep = catalog.deployment(self.deployment_name)
        assert dep is not None, self.deployment_name
        return dep


CASES: dict[ProviderName, Case] = {
    case.provider: case
    for case in (
        Case(ProviderName.OPENAI, "openai/gpt-4o-mini", OpenAIProvider),
        Case(ProviderName.AZURE, "azure/gpt-4o-mini", AzureOpenAIProvider),
        Case(
            ProviderName.ANTHROPIC,
            "anthropic/claude-haiku-4-5",
            AnthropicProvider,
            quota_status=400,  # "credit balance is too low" is an invalid_request_error
            rate_limit_header="anthropic-ratelimit-requests-limit",
        ),
        Case(
            ProviderName.GEMINI,
            "gemini/gemini-2.5-flash",
            GeminiProvider,
            retry_after=RetryAfterOnTheWire.RETRY_INFO,
            content_filter_status=None,  # promptFeedback.blockReason SAFETY on a 200
            error_request_id=False,  # a Google error body carries no request id
            rate_limit_header=None,
        ),
        Case(
            ProviderName.COHERE,
            "cohere/command-r7b",
            CohereProvider,
            rate_limit_header="x-trial-endpoint-call-limit",
        ),
        Case(
            ProviderName.MISTRAL,
            "mistral/mistral-small",
            MistralProvider,
            rate_limit_header="x-ratelimitbysize-remaining-minute",
        ),
        Case(
            ProviderName.BEDROCK,
            "bedrock/nova-lite",
            BedrockProvider,
            retry_after=RetryAfterOnTheWire.NOT_SENT,
            quota_status=400,  # ServiceQuotaExceededException
            auth_401_status=403,  # UnrecognizedClientException
            rate_limit_header=None,
        ),
        Case(ProviderName.OLLAMA, "ollama/llama3.2", OllamaProvider),
        Case(ProviderName.COMPATIBLE, "vllm/qwen", CompatibleProvider),  # a base_url, as it requires
    )
}

# in the table's order; a provider without a case fails test_every_provider_in_the_table_has_a_case
TABLE_CASES = [CASES[name] for name in PROVIDERS if name in CASES]
PROVIDER_PARAMS = [pytest.param(case, id=case.provider.value) for case in TABLE_CASES]
MODES = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
# What a message must say when no connection could be made: that, not that something timed out.
CONNECT_FAILED = re.compile(r"connection (refused|failed)|could not connect|cannot connect", re.IGNORECASE)


def call(case: Case, url: str, request: ChatRequest, sink: TextSink | None = None) -> ChatResponse:
    """One call through a fresh adapter of `case`'s provider aimed at `url`."""
    return complete_fresh(lambda: emulated(case.adapter, case.deployment, url), request, sink)


@dataclass(frozen=True)
class ErrorRow:
    name: str
    script: dict[str, Any]  # one ScriptedResponse for the emulator
    expected: type[errors.ProviderError]  # the exact class the adapter must raise
    status: int | None  # the HTTP status the error must carry
    retry_after: float | None = None  # checked for RateLimited


def error_rows(case: Case) -> list[ErrorRow]:
    """The error statuses every provider maps the same way, as `case`'s wire format renders them."""
    sent = case.retry_after is not RetryAfterOnTheWire.NOT_SENT
    return [
        ErrorRow(
            f"429-{case.retry_after}",
            {"status": 429, "retry_after": 2.5, "message": "slow down please"},
            errors.RateLimited,
            429,
            retry_after=2.5 if sent else None,
        ),
        ErrorRow(
            f"quota-{case.quota_status}",
            {"status": case.quota_status, "code": "insufficient_quota"},
            errors.QuotaExhausted,
            case.quota_status,
        ),
        ErrorRow("401", {"status": 401, "message": "bad key"}, errors.AuthError, case.auth_401_status),
        ErrorRow("403", {"status": 403, "message": "no access to this model"}, errors.AuthError, 403),
        ErrorRow(
            "400", {"status": 400, "message": "temperature must be at most 1"}, errors.InvalidRequest, 400
        ),
        ErrorRow(
            "400-context-length",
            {"status": 400, "code": "context_length_exceeded"},
            errors.ContextTooLong,
            400,
        ),
        ErrorRow(
            "content-filter",
            {"status": 400, "code": "content_filter"},
            errors.ContentFiltered,
            case.content_filter_status,
        ),
        ErrorRow("500", {"status": 500, "message": "something broke inside"}, errors.Transient, 500),
        ErrorRow("503", {"status": 503, "message": "try again soon"}, errors.Transient, 503),
    ]


ERROR_PARAMS = [
    pytest.param(case, row, id=f"{case.provider.value}-{row.name}")
    for case in TABLE_CASES
    for row in error_rows(case)
]


def test_every_provider_in_the_table_has_a_case() -> None:
    assert set(CASES) == set(PROVIDERS)


@pytest.mark.parametrize("case", PROVIDER_PARAMS)
def test_registry_finds_the_adapter(case: Case) -> None:
    assert adapter_class(case.provider) is case.adapter


@MODES
@pytest.mark.parametrize(("case", "row"), ERROR_PARAMS)
def test_errors_are_mapped(emulator: EmulatorHandle, case: Case, row: ErrorRow, stream: bool) -> None:
    emulator.configure({case.provider.value: {"script": [row.script]}})
    with pytest.raises(errors.ProviderError) as info:
        call(case, emulator.url, req(), discard if stream else None)
    err = info.value
    assert type(err) is row.expected, f"{type(err).__name__}: {err}"
    assert err.status_code == row.status
    if row.expected is errors.RateLimited:
        assert err.retry_after == row.retry_after
    if "message" in row.script:
        assert row.script["message"] in err.message
    if case.error_request_id and row.status is not None:
        assert err.provider_request_id
    assert [c["provider"] for c in emulator.calls()] == [case.provider.value]


@MODES
@pytest.mark.parametrize("case", PROVIDER_PARAMS)
def test_connection_refused_is_transient(case: Case, stream: bool) -> None:
    with pytest.raises(errors.Transient) as info:
        call(case, REFUSED_URL, req(), discard if stream else None)
    message = info.value.message
    assert CONNECT_FAILED.search(message), message
    assert "timed out" not in message.lower()


@pytest.mark.parametrize("case", PROVIDER_PARAMS)
def test_missing_key_names_the_variable(emulator: EmulatorHandle, case: Case) -> None:
    spec = PROVIDERS[case.provider]
    dep = case.deployment
    if spec.key_env is None:  # a local endpoint: no key, and the adapter builds without one
        env = {spec.endpoint_env: "localhost:11434"} if spec.endpoint_env else {}
        target = resolve_target(dep, emulator_url=emulator.url, emulator_mode="auto", environ=env)
        assert target.api_key is None and not target.emulated
        assert target.base_url == (dep.spec.base_url or "http://localhost:11434/v1")
        case.adapter(target)
        return
    with pytest.raises(errors.MissingCredentials) as info:
        resolve_target(dep, emulator_url=emulator.url, emulator_mode="never", environ={})
    for name in (spec.key_env, *spec.key_env_fallbacks):
        assert name in info.value.message
    for fallback in spec.key_env_fallbacks:  # each fallback alone is enough
        target = resolve_target(dep, emulator_url=None, environ={fallback: "from-the-fallback"})
        assert target.api_key == "from-the-fallback"
    assert emulator.calls() == []
    # the same deployment, with no key, goes to the emulator when allowed to
    assert resolve_target(dep, emulator_url=emulator.url, environ={}).api_key == EMULATOR_KEY


@pytest.mark.parametrize("case", PROVIDER_PARAMS)
def test_streaming_tool_call(emulator: EmulatorHandle, case: Case) -> None:
    r = call(case, emulator.url, req(tools=TOOLS), no_text_expected)
    assert r.finish_reason is FinishReason.TOOL_CALLS
    assert r.text == ""
    (tool_call,) = r.tool_calls
    assert tool_call.id
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "example"}
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


@pytest.mark.parametrize("case", PROVIDER_PARAMS)
def test_streamed_text_is_the_plain_text(emulator: EmulatorHandle, case: Case) -> None:
    plain = call(case, emulator.url, req())
    sink = Collector()
    streamed = call(case, emulator.url, req(), sink)
    assert PROMPT in plain.text
    assert len(sink.deltas) > 3
    assert sink.text == streamed.text == plain.text
    for r in (plain, streamed):
        assert r.finish_reason is FinishReason.STOP
        assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
        assert r.provider_request_id
        if case.rate_limit_header:
            assert case.rate_limit_header in r.rate_limit_headers
    assert streamed.usage == plain.usage
    assert [c["provider"] for c in emulator.calls()] == [case.provider.value] * 2
