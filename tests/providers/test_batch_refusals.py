"""Batches refused: lines that break a rule are refused by the client before anything is sent,
and the providers' own refusals (too many requests, an unknown model) arrive in the online
calls' taxonomy, at submit or as a FAILED batch, as each provider refuses them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.types import ChatRequest
from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import configure_batches
from tests.providers.batch_support import (
    PROVIDERS,
    collect,
    deployment,
    lines,
    request,
    until_ended,
    using_client,
)
from workers.providers import errors
from workers.providers.batch_base import BatchLine, LineOutcome, ProviderBatchClient
from workers.providers.batch_base import ProviderBatchState as S


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lines_breaking_a_rule_are_refused_before_anything_is_sent(
    emulator: EmulatorHandle, provider: str
) -> None:
    good = lines(provider, 3)
    other = "mistral" if provider != "mistral" else "openai"
    cases: list[tuple[list[BatchLine], str]] = [
        ([], "at least one line"),
        ([*good, BatchLine("with space", good[0].request, good[0].deployment)], "'with space' must be 1-64"),
        ([*good, BatchLine("x" * 65, good[0].request, good[0].deployment)], "must be 1-64"),
        ([*good, good[1]], "'l1' appears twice"),
        ([*good, lines(other, 1, prefix="o")[0]], "a provider batch goes to one deployment"),
    ]

    async def body(client: ProviderBatchClient) -> None:
        for batch, words in cases:
            with pytest.raises(errors.InvalidRequest, match=words):
                await client.submit(batch)
        client.limits = replace(client.limits, max_lines=2)
        with pytest.raises(errors.InvalidRequest, match=r"3 lines are more than a \w+ batch holds \(2\)"):
            await client.submit(good)
        size = len(client.encode_line(good[0]))
        client.limits = replace(client.limits, max_lines=None, max_bytes=2 * (size + 2))
        with pytest.raises(errors.InvalidRequest, match=r"at line 3 \(l2\): split it"):
            await client.submit(good)

    using_client(provider, emulator.url, body)
    assert emulator.calls(scope="batch") == []  # not a file, not a batch


# How each provider refuses more requests than it takes: at once, or by failing the batch.
REFUSED_AT_SUBMIT = {"anthropic", "gemini"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_limit_is_an_invalid_request(emulator: EmulatorHandle, provider: str) -> None:
    configure_batches(emulator, completion_s=0.2, validating_s=0.1, max_lines=2)

    async def body(client: ProviderBatchClient) -> None:
        if provider in REFUSED_AT_SUBMIT:
            with pytest.raises(errors.InvalidRequest) as info:
                await client.submit(lines(provider, 3))
            assert info.value.status_code == 400 and "2" in info.value.message
            return
        ref = await client.submit(lines(provider, 3))
        status, _ = await until_ended(client, ref)
        assert status.state is S.FAILED
        assert type(status.error) is errors.InvalidRequest and status.error.status_code == 400
        assert "limit of 2" in status.error.message or "at most 2" in status.error.message
        assert await collect(client, ref) == {}  # no line ran: all of them go online

    using_client(provider, emulator.url, body)


def test_openai_names_the_lines_refused_and_an_enqueued_token_limit_is_a_rate_limit() -> None:
    from types import SimpleNamespace as NS

    from workers.providers.openai_batch import _batch_error

    refused = _batch_error(
        NS(errors=NS(data=[NS(code="model_not_found", message="The model 'x' does not exist.", line=3)]))
    )
    assert type(refused) is errors.InvalidRequest
    assert refused.message == "line 3: The model 'x' does not exist. (model_not_found)"
    quota = _batch_error(
        NS(
            errors=NS(
                data=[NS(code="token_limit_exceeded", message="Enqueued token limit reached.", line=None)]
            )
        )
    )
    assert type(quota) is errors.RateLimited and quota.status_code == 429


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_model_is_an_invalid_request(emulator: EmulatorHandle, provider: str) -> None:
    """The emulator knows only the models listed; each provider refuses another its own way."""
    configure_batches(emulator, completion_s=0, models=["some-other-model"])

    async def body(client: ProviderBatchClient) -> None:
        if provider in ("gemini", "mistral"):  # the create call names the model: refused at once
            with pytest.raises(errors.InvalidRequest) as info:
                await client.submit(lines(provider, 2))
            assert info.value.status_code in (400, 404)
            return
        ref = await client.submit(lines(provider, 2))
        status, _ = await until_ended(client, ref)
        if provider == "anthropic":  # each request is checked when it runs
            assert status.state is S.COMPLETED
            results = await collect(client, ref)
            assert {r.outcome for r in results.values()} == {LineOutcome.FAILED}
            error = results["l0"].error
            assert type(error) is errors.InvalidRequest and error.status_code == 404
            return
        assert status.state is S.FAILED and type(status.error) is errors.InvalidRequest
        assert "model_not_found" in status.error.message and "line 1" in status.error.message

    using_client(provider, emulator.url, body)


def test_a_line_the_provider_refuses_fails_alone(emulator: EmulatorHandle) -> None:
    """Anthropic checks each request when it runs: a bad one errors as the online call would,
    the others answer."""
    configure_batches(emulator, completion_s=0)
    dep = deployment("anthropic")
    bmp = {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}
    odd = ChatRequest.model_validate({"messages": [{"role": "user", "content": [bmp]}]})

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit([BatchLine("fine", request("hello"), dep), BatchLine("odd", odd, dep)])
        await until_ended(client, ref)
        results = await collect(client, ref)
        assert results["fine"].outcome is LineOutcome.SUCCEEDED
        error = results["odd"].error
        assert results["odd"].outcome is LineOutcome.FAILED
        assert type(error) is errors.InvalidRequest and error.status_code == 400
        assert "media type" in error.message

    using_client("anthropic", emulator.url, body)
