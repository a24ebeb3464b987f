"""Every provider-batch client through its official SDK against the emulator over HTTP: submit,
poll to the end, results by custom_id with usage and batch-price costs, per-line failures in
the online taxonomy, expiry, cancel mid-way, and a stored ref resumed by a new client."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from core.types import FinishReason
from routing.costs import settle_batch_cost, settle_cost
from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import batch_calls, configure_batches, control_batch
from tests.providers.batch_support import (
    PROVIDERS,
    batch_client,
    collect,
    control_id,
    deployment,
    lines,
    request,
    until_ended,
    using_client,
)
from workers.providers import adapter_class, errors
from workers.providers.base import resolve_target
from workers.providers.batch_base import (
    BatchLine,
    BatchNotEnded,
    LineOutcome,
    NotRunReason,
    ProviderBatchClient,
    ProviderBatchRef,
    ProviderBatchState,
)
from workers.providers.batch_base import ProviderBatchState as S

ORDER = [S.VALIDATING, S.IN_PROGRESS, S.FINALIZING, S.COMPLETED]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lifecycle_results_by_custom_id_with_usage_at_batch_prices(
    emulator: EmulatorHandle, provider: str
) -> None:
    configure_batches(emulator, completion_s=1.2)
    batch = lines(provider, 6)

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit(batch, label="nightly")
        assert (ref.provider, ref.deployment, ref.line_count) == (provider, deployment(provider).name, 6)
        assert (ref.input_file_id is not None) == (provider in ("openai", "azure", "mistral"))
        status, seen = await until_ended(client, ref)
        assert status.state is S.COMPLETED and status.error is None and S.IN_PROGRESS in seen
        assert seen == sorted(seen, key=ORDER.index)
        if status.counts is not None:  # Gemini's Developer API reports none
            assert (status.counts.total, status.counts.completed, status.counts.failed) == (6, 6, 0)
        results = await collect(client, ref)
        assert set(results) == {line.custom_id for line in batch}
        model = deployment(provider).model
        online_total = batch_total = Decimal(0)
        for custom_id, result in results.items():
            assert result.outcome is LineOutcome.SUCCEEDED and result.response is not None
            answer = result.response
            assert f"question number {custom_id}" in answer.text
            assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
            assert answer.finish_reason is FinishReason.STOP
            batch_total += settle_batch_cost(model, answer.usage)
            online_total += settle_cost(model, answer.usage)
        assert Decimal(0) < batch_total <= Decimal("0.52") * online_total
        assert len(batch_calls(emulator, "batch_create", control_id(ref))) == 1

    using_client(provider, emulator.url, body)


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != "azure"])
def test_a_batch_line_is_the_request_the_online_call_sends(emulator: EmulatorHandle, provider: str) -> None:
    """The emulator answers a request deterministically from what it parsed of it, so the same
    answer online and in a batch means the same request (system prompt, sampling, max_tokens)."""
    configure_batches(emulator, completion_s=0)
    dep = deployment(provider)
    chat = request("summarise the tides of the northern sea for me", max_tokens=6, temperature=0.3)
    chat.messages.insert(0, chat.messages[0].model_copy(update={"role": "system", "content": "Be terse"}))

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit([BatchLine("same", chat, dep)])
        await until_ended(client, ref)
        batched = (await collect(client, ref))["same"].response
        adapter = adapter_class(dep.provider)(
            resolve_target(dep, emulator_url=emulator.url, emulator_mode="always")
        )
        try:
            online = await adapter.complete(chat)
        finally:
            await adapter.aclose()
        assert batched is not None and batched.finish_reason is FinishReason.LENGTH
        assert (batched.text, batched.usage, batched.finish_reason) == (
            online.text,
            online.usage,
            online.finish_reason,
        )

    using_client(provider, emulator.url, body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_per_line_failures_map_to_the_online_taxonomy(emulator: EmulatorHandle, provider: str) -> None:
    configure_batches(emulator, seed=3, completion_s=0, line_failure_rate=0.5)
    batch = lines(provider, 20)

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit(batch)
        status, _ = await until_ended(client, ref)
        assert status.state is S.COMPLETED
        results = await collect(client, ref)
        assert set(results) == {line.custom_id for line in batch}
        failed = {cid for cid, r in results.items() if r.outcome is LineOutcome.FAILED}
        assert 3 < len(failed) < 17
        assert failed | {cid for cid, r in results.items() if r.outcome is LineOutcome.SUCCEEDED} == set(
            results
        )
        for cid in failed:
            error = results[cid].error
            assert type(error) is errors.Transient and error.status_code == 500 and error.message, cid
        if status.counts is not None:
            assert (status.counts.completed, status.counts.failed) == (20 - len(failed), len(failed))
        assert control_batch(emulator, control_id(ref))["errored"] == len(failed)

    using_client(provider, emulator.url, body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expiry_keeps_the_lines_done_and_the_rest_never_ran(emulator: EmulatorHandle, provider: str) -> None:
    configure_batches(emulator, completion_s=4, expire_after_s=1.1)  # a line every 0.4 s: two done

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit(lines(provider, 10))
        status, _ = await until_ended(client, ref)
        assert status.state is S.EXPIRED
        results = await collect(client, ref)
        done = {cid for cid, r in results.items() if r.outcome is LineOutcome.SUCCEEDED}
        assert done == {"l0", "l1"}
        unrun = {cid: r for cid, r in results.items() if cid not in done}
        assert set(unrun) == {f"l{i}" for i in range(2, 10)}
        assert all(
            r.outcome is LineOutcome.NOT_RUN and r.not_run is NotRunReason.EXPIRED for r in unrun.values()
        )
        assert all(r.response is None and r.error is None for r in unrun.values())
        if status.counts is not None:
            assert (status.counts.completed, status.counts.failed) == (2, 8)

    using_client(provider, emulator.url, body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_mid_way_keeps_the_lines_done(emulator: EmulatorHandle, provider: str) -> None:
    configure_batches(emulator, completion_s=3, cancelling_s=0.3)

    async def body(client: ProviderBatchClient) -> None:
        ref = await client.submit(lines(provider, 10))
        for _ in range(200):
            if control_batch(emulator, control_id(ref))["done"] >= 2:
                break
            await asyncio.sleep(0.03)
        asked = await client.cancel(ref)
        assert asked.state in (S.CANCELLING, S.IN_PROGRESS, S.CANCELLED)
        status, _ = await until_ended(client, ref)
        assert status.state is S.CANCELLED
        kept = control_batch(emulator, control_id(ref))["done"]
        assert 2 <= kept < 10
        results = await collect(client, ref)
        assert len(results) == 10
        done = {cid for cid, r in results.items() if r.outcome is LineOutcome.SUCCEEDED}
        assert done == {f"l{i}" for i in range(kept)}
        rest = [r for cid, r in results.items() if cid not in done]
        assert all(r.outcome is LineOutcome.NOT_RUN and r.not_run is NotRunReason.CANCELLED for r in rest)
        again = await client.cancel(ref)  # an ended batch: nothing to do, no error
        assert again.state is S.CANCELLED
        assert len(batch_calls(emulator, "batch_cancel", control_id(ref))) == 2

    using_client(provider, emulator.url, body)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_results_wait_for_the_end_and_a_stored_ref_resumes_in_a_new_client(
    emulator: EmulatorHandle, provider: str
) -> None:
    configure_batches(emulator, completion_s=1.5)

    async def submit(client: ProviderBatchClient) -> str:
        ref = await client.submit(lines(provider, 4))
        with pytest.raises(BatchNotEnded, match=ref.batch_id):
            await collect(client, ref)
        return json.dumps(ref.to_json())  # what the orchestration stores

    stored = using_client(provider, emulator.url, submit)

    async def resume(client: ProviderBatchClient) -> None:  # another process, after a restart
        ref = ProviderBatchRef.from_json(json.loads(stored))
        status, _ = await until_ended(client, ref)
        assert status.state is S.COMPLETED
        results = await collect(client, ref)
        assert sorted(results) == ["l0", "l1", "l2", "l3"]
        assert all(r.outcome is LineOutcome.SUCCEEDED for r in results.values())

    using_client(provider, emulator.url, resume)
    assert len(batch_calls(emulator, "batch_create")) == 1


def test_a_ref_is_plain_data() -> None:
    ref = ProviderBatchRef("openai", "openai/gpt-4o-mini", "batch_1", "file-1", 3)
    assert ProviderBatchRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert ProviderBatchState("expired").terminal and not ProviderBatchState("cancelling").terminal


def test_a_client_is_built_as_the_online_adapter_is(emulator: EmulatorHandle) -> None:
    """The same target resolution: without the emulator and without a key, it names the variable."""
    with pytest.raises(errors.MissingCredentials, match="OPENAI_API_KEY"):
        resolve_target(deployment("openai"), emulator_url=None, environ={})

    async def body() -> None:
        client = batch_client("azure", emulator.url)
        try:
            assert client.limits.max_lines == 100_000 and client.limits.expires_after_s is None
        finally:
            await client.aclose()

    asyncio.run(body())
