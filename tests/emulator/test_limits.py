"""Rate limits in the emulator: the rolling-minute windows (rpm, tpm), calls in flight
(max_concurrency), retry-after, the call log, and each provider's rate-limit headers.

The window arithmetic is checked exactly on a `Limiter` with a fake clock; over HTTP, with the
official SDKs, the tests use small limits and check counts, headers and the call log, never
wall-clock speed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import anthropic
import cohere
import httpx
import openai
import pytest
from botocore.exceptions import ClientError
from google.genai import errors as genai_errors

from emulator import server
from emulator.core import Conversation, Emulator, EmulatorConfig, ScopeConfig
from emulator.limits import Limiter, anthropic_headers, go_duration, openai_headers
from tests.conftest import EmulatorHandle
from tests.emulator.clients import (
    anthropic_client,
    async_openai_client,
    azure_client,
    bedrock_client,
    cohere_client,
    gemini_client,
    mistral_client,
    openai_client,
    parse_go_duration,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the window arithmetic, exactly ------------------------------------------------------------


def test_rpm_window_admits_rpm_calls_a_minute_and_retry_after_is_exact() -> None:
    clock, limits = Clock(), ScopeConfig(rpm=2)
    limiter = Limiter(clock)
    assert limiter.admit("k", limits, 0)[0] is None  # at 1000
    clock.now = 1010.0
    assert limiter.admit("k", limits, 0)[0] is None
    clock.now = 1020.0
    refusal, ticket = limiter.admit("k", limits, 0)
    assert ticket is None and refusal is not None and refusal.retry_after == 40.0
    clock.now = 1059.999  # a hair early: still full, and the wait left is what is left
    refusal, _ = limiter.admit("k", limits, 0)
    assert refusal is not None and refusal.retry_after == pytest.approx(0.001)
    clock.now = 1060.0  # the call at 1000 has aged out
    assert limiter.admit("k", limits, 0)[0] is None
    refusal, _ = limiter.admit("k", limits, 0)
    assert refusal is not None and refusal.retry_after == 10.0  # now the call at 1010 must go
    state = limiter.state("k", limits, 0)
    assert state.requests is not None and (state.requests.remaining, state.requests.reset_s) == (0, 60.0)


def test_tpm_window_sums_tokens_and_a_refused_call_is_not_counted() -> None:
    clock, limits = Clock(), ScopeConfig(tpm=100)
    limiter = Limiter(clock)
    assert limiter.admit("k", limits, 60)[0] is None  # at 1000
    clock.now = 1005.0
    assert limiter.admit("k", limits, 30)[0] is None
    clock.now = 1010.0
    refusal, _ = limiter.admit("k", limits, 20)
    # 110 > 100: the 60 admitted at 1000 must age out first
    assert refusal is not None and refusal.retry_after == 50.0 and "100 tokens per minute" in refusal.message
    assert limiter.admit("k", limits, 10)[0] is None  # the refused 20 took nothing
    state = limiter.state("k", limits, 10)
    assert state.tokens is not None and (state.tokens.remaining, state.tokens.reset_s) == (0, 60.0)
    too_big, _ = limiter.admit("k", limits, 101)
    assert too_big is not None and too_big.retry_after is None  # it will never fit
    clock.now = 1065.0  # the 60 and the 30 have aged out, the 10 from 1010 has not
    state = limiter.state("k", limits, 0)
    assert state.tokens is not None and (state.tokens.remaining, state.tokens.reset_s) == (90, 5.0)


def test_rpm_and_tpm_together_wait_for_both() -> None:
    clock, limits = Clock(), ScopeConfig(rpm=2, tpm=100)
    limiter = Limiter(clock)
    limiter.admit("k", limits, 90)  # at 1000
    clock.now = 1030.0
    limiter.admit("k", limits, 5)
    clock.now = 1040.0
    refusal, _ = limiter.admit("k", limits, 50)
    # rpm frees a place at 1060; tokens need the 90 gone, also at 1060
    assert refusal is not None and refusal.retry_after == 20.0
    assert "2 requests per minute and 100 tokens per minute" in refusal.message


def test_max_concurrency_counts_calls_in_flight() -> None:
    clock, limits = Clock(), ScopeConfig(max_concurrency=2)
    limiter = Limiter(clock)
    _, first = limiter.admit("k", limits, 0, expected_s=3.0)
    _, second = limiter.admit("k", limits, 0, expected_s=2.0)
    assert first is not None and second is not None
    refusal, ticket = limiter.admit("k", limits, 0)
    assert ticket is None and refusal is not None and refusal.retry_after == 2.0  # the soonest end
    limiter.release("k", second)
    assert limiter.admit("k", limits, 0)[1] is not None
    limiter.release("k", first)
    limiter.release("k", first)  # releasing twice is harmless


def test_header_formats() -> None:
    assert [go_duration(s) for s in (0, 0.02, 0.0201, 1, 1.5, 360, 3725.25, 59.9994)] == [
        "0s",
        "20ms",
        "21ms",
        "1s",
        "1.5s",
        "6m0s",
        "1h2m5.25s",
        "1m0s",
    ]
    assert parse_go_duration("1h2m5.25s") == 3725.25 and parse_go_duration("20ms") == 0.02
    clock = Clock()
    limiter, limits = Limiter(clock), ScopeConfig(rpm=5, tpm=1000)
    limiter.admit("k", limits, 300)
    clock.now += 12
    state = limiter.state("k", limits, 300)
    assert openai_headers(state) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "48s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "700",
        "x-ratelimit-reset-tokens": "48s",
    }
    headers = anthropic_headers(state)
    for family in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{family}-reset"])
        assert 47 <= (reset - datetime.now(UTC)).total_seconds() <= 49.5
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "700"


def test_the_call_log_records_what_the_limits_decided() -> None:
    clock = Clock()
    emu = Emulator(EmulatorConfig(scopes={"m": ScopeConfig(tpm=50)}), clock=clock)
    conv = Conversation(model="m", texts=[("user", "x" * 40)], max_tokens=20)
    weight = emu.request_tokens(conv)
    assert weight == 10 + 4 + 20  # input tokens (with the per-message overhead) plus max_tokens

    async def go() -> list[int]:
        statuses = []
        for _ in range(2):
            async with emu.call("p", "m", tokens=weight) as call:
                statuses.append(call.fault.status if call.fault else 200)
                assert call.rate is not None and call.rate.tokens is not None
        return statuses

    assert asyncio.run(go()) == [200, 429]
    assert [(c["status"], c["tokens"], c["counted"], c["kind"]) for c in emu.calls] == [
        (200, 34, True, "chat"),
        (429, 34, False, "chat"),
    ]


def test_an_outage_can_start_after_some_calls() -> None:
    """`outage_after`: the scope's first calls succeed, every later one is a 503; configuring
    again starts the count afresh (the demo's provider that fails part-way)."""
    emu = Emulator(EmulatorConfig(scopes={"gemini": ScopeConfig(outage_after=2)}))

    async def statuses(provider: str, n: int) -> list[int]:
        out = []
        for _ in range(n):
            async with emu.call(provider, "any-model") as call:
                out.append(call.fault.status if call.fault else 200)
        return out

    assert asyncio.run(statuses("gemini", 4)) == [200, 200, 503, 503]
    assert asyncio.run(statuses("mistral", 3)) == [200, 200, 200]  # another scope: not affected
    emu.configure(EmulatorConfig(scopes={"gemini": ScopeConfig(outage_after=1)}))
    assert asyncio.run(statuses("gemini", 2)) == [200, 503]


def test_server_serves_every_format_module_it_imports() -> None:
    assert all(isinstance(m, ModuleType) and callable(m.add_routes) for m in server.FORMAT_MODULES)
    paths = {r.resource.canonical for r in server.build_app().router.routes() if r.resource is not None}
    for path in (
        "/{provider}/v1/embeddings",
        "/azure/openai/deployments/{deployment}/embeddings",
        "/cohere/v2/embed",
        "/mistral/v1/embeddings",
        "/gemini/{version}/models/{model}:{action}",
        "/bedrock/model/{model}/invoke",
        "/anthropic/v1/messages",
    ):
        assert path in paths


# --- over HTTP, through the SDKs ---------------------------------------------------------------


def windows_respected(times: Sequence[float], limit: int) -> bool:
    """No 60-second window holds more than `limit` of `times`."""
    ordered = sorted(times)
    return all(sum(1 for t in ordered if start <= t < start + 60) <= limit for start in ordered)


async def burst(url: str, n: int) -> list[Any]:
    client = async_openai_client(url)
    try:
        calls = [
            client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=f"text {i}")
            for i in range(n)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await client.close()


def test_a_burst_never_takes_more_than_rpm_calls_a_minute(emulator: EmulatorHandle) -> None:
    emulator.configure({"text-embedding-3-small": {"rpm": 3}})
    results = asyncio.run(burst(emulator.url, 12))
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) == 3 and len(refused) == 9
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2]
    for error in refused:
        headers = error.response.headers
        # the first admitted call leaves the window 60 s after it came in, and the burst is young
        assert 50 < float(headers["retry-after"]) <= 60
        assert (
            headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "3"
        )
        assert 50 < parse_go_duration(headers["x-ratelimit-reset-requests"]) <= 60
    calls = emulator.calls(model="text-embedding-3-small")
    assert sorted(c["status"] for c in calls) == [200] * 3 + [429] * 9
    assert all(c["counted"] == (c["status"] == 200) for c in calls)
    assert windows_respected([c["t"] for c in calls if c["counted"]], 3)
    # still refused: the refusals did not count, but nothing has aged out either
    with pytest.raises(openai.RateLimitError):
        openai_client(emulator.url).embeddings.create(model="text-embedding-3-small", input="again")


def test_tpm_weighs_embeddings_by_input_tokens(emulator: EmulatorHandle) -> None:
    emulator.configure({"openai": {"tpm": 100}})
    client = openai_client(emulator.url)
    forty = "abcd" * 40  # 40 tokens

    def remaining_tokens(text: str) -> int:
        raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)
        return int(raw.headers["x-ratelimit-remaining-tokens"])

    assert remaining_tokens(forty) == 60
    assert remaining_tokens(forty) == 20
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model="text-embedding-3-small", input=forty)
    assert 50 < float(info.value.response.headers["retry-after"]) <= 60
    assert remaining_tokens("abcd" * 20) == 0  # the refused 40 took nothing: 20 still fit
    with pytest.raises(openai.RateLimitError) as too_big:
        client.embeddings.create(model="text-embedding-3-small", input="abcd" * 101)
    assert "can never fit" in too_big.value.message and "retry-after" not in too_big.value.response.headers
    calls = emulator.calls(provider="openai")
    assert [(c["tokens"], c["counted"]) for c in calls] == [
        (40, True),
        (40, True),
        (40, False),
        (20, True),
        (101, False),
    ]


def test_tpm_weighs_chat_by_input_plus_max_tokens(emulator: EmulatorHandle) -> None:
    emulator.configure({"gpt-4o-mini": {"tpm": 10_000}})
    client = openai_client(emulator.url)
    messages: Any = [{"role": "user", "content": "Tell me about the sea"}]
    capped = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, max_tokens=50
    )
    free = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    usage_capped, usage_free = capped.parse().usage, free.parse().usage
    assert usage_capped is not None and usage_free is not None
    weights = [c["tokens"] for c in emulator.calls(model="gpt-4o-mini")]
    # with max_tokens it is reserved in full; without, the answer's own output tokens count
    assert weights == [
        usage_capped.prompt_tokens + 50,
        usage_free.prompt_tokens + usage_free.completion_tokens,
    ]
    assert int(free.headers["x-ratelimit-remaining-tokens"]) == 10_000 - sum(weights)


async def chat_burst(url: str, n: int) -> list[Any]:
    client = async_openai_client(url)
    try:
        messages: Any = [{"role": "user", "content": "hello"}]
        calls = [client.chat.completions.create(model="gpt-4o-mini", messages=messages) for _ in range(n)]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await client.close()


def test_max_concurrency_refuses_calls_beyond_those_in_flight(emulator: EmulatorHandle) -> None:
    emulator.configure({"gpt-4o-mini": {"max_concurrency": 2, "latency_ms": 1500}})
    results = asyncio.run(chat_burst(emulator.url, 5))
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 3 and sum(1 for r in results if not isinstance(r, BaseException)) == 2
    for error in refused:
        assert 0 < float(error.response.headers["retry-after"]) <= 1.5  # when a call in flight should end
        assert "concurrency limit of 2" in error.message
    # both have ended: there is room again
    assert (
        openai_client(emulator.url)
        .chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
        .choices
    )
    assert sorted(c["status"] for c in emulator.calls(model="gpt-4o-mini")) == [200] * 3 + [429] * 3


def test_openai_and_azure_headers_come_from_the_window(emulator: EmulatorHandle) -> None:
    emulator.configure({"gpt-4o-mini": {"rpm": 10, "tpm": 5000}, "azure": {"rpm": 4}})
    raw = openai_client(emulator.url).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    weight = emulator.calls()[0]["tokens"]
    assert raw.headers["x-ratelimit-limit-requests"] == "10"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(5000 - weight)
    for name in ("requests", "tokens"):
        assert 59 < parse_go_duration(raw.headers[f"x-ratelimit-reset-{name}"]) <= 60
    azure = azure_client(emulator.url).embeddings.with_raw_response.create(model="my-embedder", input="x")
    assert azure.headers["x-ratelimit-remaining-requests"] == "3"
    assert "x-ratelimit-limit-tokens" not in azure.headers  # the azure scope sets no tpm


def test_anthropic_headers_come_from_the_window(emulator: EmulatorHandle) -> None:
    emulator.configure({"claude-haiku-4-5": {"rpm": 2, "tpm": 5000}})
    client = anthropic_client(emulator.url)
    messages: Any = [{"role": "user", "content": "hi"}]
    first = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=messages
    )
    weight = emulator.calls()[0]["tokens"]
    headers = first.headers
    assert (
        headers["anthropic-ratelimit-requests-limit"],
        headers["anthropic-ratelimit-requests-remaining"],
    ) == (
        "2",
        "1",
    )
    for family in ("requests", "tokens", "input-tokens", "output-tokens"):
        reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{family}-reset"])
        assert 58 <= (reset - datetime.now(UTC)).total_seconds() <= 61
    for family in ("tokens", "input-tokens", "output-tokens"):
        assert headers[f"anthropic-ratelimit-{family}-limit"] == "5000"
        assert headers[f"anthropic-ratelimit-{family}-remaining"] == str(5000 - weight)
    client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
    refused = info.value.response.headers
    assert refused["anthropic-ratelimit-requests-remaining"] == "0"
    assert 55 < float(refused["retry-after"]) <= 60


def test_headers_can_be_turned_off(emulator: EmulatorHandle) -> None:
    off = {"rpm": 1, "tpm": 1000, "rate_limit_headers": False}
    emulator.configure({"gpt-4o-mini": off, "claude-haiku-4-5": off})
    client = openai_client(emulator.url)
    messages: Any = [{"role": "user", "content": "hi"}]
    ok = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert not [h for h in ok.headers if h.startswith("x-ratelimit")]
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert not [h for h in info.value.response.headers if h.startswith("x-ratelimit")]
    assert float(info.value.response.headers["retry-after"]) > 50  # retry-after is not a rate-limit header
    claude = anthropic_client(emulator.url).messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=8, messages=messages
    )
    assert not [h for h in claude.headers if h.startswith("anthropic-ratelimit")]


def test_an_unlimited_scope_keeps_its_placeholder_headers(emulator: EmulatorHandle) -> None:
    raw = openai_client(emulator.url).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="x"
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    assert "x-ratelimit-limit-tokens" not in raw.headers


def test_mistral_reports_its_token_window(emulator: EmulatorHandle) -> None:
    emulator.configure({"mistral-embed": {"tpm": 1000}})
    response = mistral_client(emulator.url).embeddings.create(model="mistral-embed", inputs=["abcd" * 10])
    assert response.usage.prompt_tokens == 10
    headers = emulator_headers(
        emulator.url, "/mistral/v1/embeddings", {"model": "mistral-embed", "input": "abcd"}
    )
    assert headers["x-ratelimitbysize-limit-minute"] == "1000"
    assert headers["x-ratelimitbysize-remaining-minute"] == str(1000 - 10 - 1)
    assert headers["ratelimitbysize-query-cost"] == "1"
    assert 59 <= int(headers["ratelimitbysize-reset"]) <= 60
    emulator.configure({"mistral-embed": {"tpm": 1000, "rate_limit_headers": False}})
    headers = emulator_headers(
        emulator.url, "/mistral/v1/embeddings", {"model": "mistral-embed", "input": "abcd"}
    )
    assert not [h for h in headers if "ratelimit" in h]


def emulator_headers(url: str, path: str, body: dict[str, Any]) -> dict[str, str]:
    """One plain POST's response headers (for a wire format whose SDK hides them)."""
    response = httpx.post(url + path, json=body, headers={"authorization": "Bearer emulator"})
    response.raise_for_status()
    return dict(response.headers)


def test_other_providers_refuse_in_their_own_way(emulator: EmulatorHandle) -> None:
    one = {"rpm": 1}
    emulator.configure({"cohere": one, "gemini": one, "bedrock": one})
    co = cohere_client(emulator.url)
    co.embed(model="embed-english-v3.0", texts=["a"], input_type="clustering")
    with pytest.raises(cohere.TooManyRequestsError) as co_info:
        co.embed(model="embed-english-v3.0", texts=["a"], input_type="clustering")
    assert co_info.value.headers is not None and 55 < float(co_info.value.headers["retry-after"]) <= 60

    async def gemini_twice() -> None:
        client = gemini_client(emulator.url)
        try:
            for _ in range(2):
                await client.aio.models.embed_content(model="gemini-embedding-001", contents=["a"])
        finally:
            await client.aio.aclose()

    with pytest.raises(genai_errors.ClientError) as g_info:
        asyncio.run(gemini_twice())
    assert g_info.value.code == 429
    details = g_info.value.details["error"]["details"]
    delay = next(d["retryDelay"] for d in details if d["@type"].endswith("RetryInfo"))
    assert 55 < float(delay.removesuffix("s")) <= 60  # Gemini says when in the body, not a header

    bedrock = bedrock_client(emulator.url)
    body = json.dumps({"inputText": "a"})
    bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=body)
    with pytest.raises(ClientError) as b_info:
        bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=body)
    assert b_info.value.response["Error"]["Code"] == "ThrottlingException"
    assert "retry-after" not in b_info.value.response["ResponseMetadata"]["HTTPHeaders"]  # Bedrock sends none


def test_the_call_log_shows_calls_per_chunk(emulator: EmulatorHandle) -> None:
    client = cohere_client(emulator.url)
    texts = [f"chunk {i}" for i in range(250)]
    for start in range(0, len(texts), 96):
        client.embed(
            model="embed-english-v3.0", texts=texts[start : start + 96], input_type="search_document"
        )
    calls = emulator.calls(provider="cohere", kind="embed")
    assert [c["inputs"] for c in calls] == [96, 96, 58]
    assert sum(c["inputs"] for c in calls) == len(texts)
