"""Anthropic's Message Batches in the emulator, through the official anthropic SDK over HTTP."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import (
    anthropic_client,
    batch_calls,
    configure_batches,
    control_batch,
    finish_now,
    wait_until,
)

MODEL = "claude-haiku-4-5"


def request(custom_id: str, **params: Any) -> Any:
    params.setdefault("model", MODEL)
    params.setdefault("max_tokens", 256)
    params.setdefault("messages", [{"role": "user", "content": f"question number {custom_id}"}])
    return {"custom_id": custom_id, "params": params}


def start(client: anthropic.Anthropic, count: int) -> MessageBatch:
    return client.messages.batches.create(requests=[request(f"r{i}") for i in range(count)])


def until_ended(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    return wait_until(
        lambda: client.messages.batches.retrieve(batch_id), lambda b: b.processing_status == "ended"
    )


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, MessageBatchIndividualResponse]:
    rows = list(client.messages.batches.results(batch_id))
    keyed = {row.custom_id: row for row in rows}
    assert len(keyed) == len(rows)
    return keyed


def test_lifecycle_with_results_by_custom_id(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=1.5)
    client = anthropic_client(emulator)
    created = start(client, 5)
    assert created.processing_status == "in_progress" and created.results_url is None
    assert created.request_counts.processing == 5
    assert (created.expires_at - created.created_at).total_seconds() == pytest.approx(24 * 3600)
    mid = wait_until(lambda: control_batch(emulator, created.id), lambda row: row["done"] > 0)
    assert mid["done"] < 5
    # As documented, the counts stay at `processing` until the whole batch ends.
    polled = client.messages.batches.retrieve(created.id)
    assert polled.processing_status == "in_progress" and polled.request_counts.processing == 5
    assert polled.request_counts.succeeded == 0
    batch = until_ended(client, created.id)
    assert batch.ended_at is not None and batch.ended_at >= batch.created_at
    assert batch.request_counts.succeeded == 5 and batch.request_counts.processing == 0
    assert batch.results_url == f"{emulator.url}/anthropic/v1/messages/batches/{batch.id}/results"
    got = results(client, batch.id)
    assert set(got) == {f"r{i}" for i in range(5)}
    for custom_id, row in got.items():
        assert row.result.type == "succeeded"
        message = row.result.message
        assert message.model == MODEL and message.stop_reason == "end_turn"
        assert message.content[0].type == "text" and f"question number {custom_id}" in message.content[0].text
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert len(batch_calls(emulator, "batch_create", created.id)) == 1
    assert len(batch_calls(emulator, "batch_results", created.id)) == 1
    assert len(batch_calls(emulator, "batch_poll", created.id)) >= 2


def test_line_failures_are_errored_with_an_api_error(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, seed=11, completion_s=0, line_failure_rate=0.5)
    client = anthropic_client(emulator)
    batch = until_ended(client, start(client, 30).id)
    got = results(client, batch.id)
    errored = {cid for cid, row in got.items() if row.result.type == "errored"}
    assert 3 < len(errored) < 27
    assert batch.request_counts.errored == len(errored)
    assert batch.request_counts.succeeded == 30 - len(errored)
    for cid in errored:
        result = got[cid].result
        assert result.type == "errored" and result.error.error.type == "api_error"


def test_invalid_params_and_unknown_models_are_errored_per_request(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0, models=[MODEL])
    client = anthropic_client(emulator)
    no_max_tokens: Any = {
        "custom_id": "no-max",
        "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    }
    batch = client.messages.batches.create(
        requests=[request("fine"), no_max_tokens, request("unknown", model="claude-nonexistent")]
    )
    got = results(client, until_ended(client, batch.id).id)
    assert got["fine"].result.type == "succeeded"
    missing = got["no-max"].result
    assert missing.type == "errored" and missing.error.error.type == "invalid_request_error"
    assert "max_tokens" in missing.error.error.message
    unknown = got["unknown"].result
    assert unknown.type == "errored" and unknown.error.error.type == "not_found_error"


def test_expiry_expires_the_requests_not_done(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=4, expire_after_s=1.1)
    client = anthropic_client(emulator)
    batch = until_ended(client, start(client, 10).id)
    counts = batch.request_counts
    assert (counts.succeeded, counts.expired, counts.canceled, counts.errored) == (2, 8, 0, 0)
    got = results(client, batch.id)
    assert {cid for cid, row in got.items() if row.result.type == "succeeded"} == {"r0", "r1"}
    assert {row.result.type for cid, row in got.items() if cid not in ("r0", "r1")} == {"expired"}


def test_cancel_mid_way_keeps_the_finished_requests(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=3, cancelling_s=0.3)
    client = anthropic_client(emulator)
    created = start(client, 10)
    wait_until(lambda: control_batch(emulator, created.id), lambda row: row["done"] >= 2)
    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    batch = until_ended(client, created.id)
    kept = batch.request_counts.succeeded
    assert 2 <= kept < 10 and batch.request_counts.canceled == 10 - kept
    got = results(client, batch.id)
    assert {cid for cid, row in got.items() if row.result.type == "succeeded"} == {
        f"r{i}" for i in range(kept)
    }
    assert sum(1 for row in got.values() if row.result.type == "canceled") == 10 - kept


REFUSED: dict[str, list[Any]] = {
    "no requests": [],
    "duplicate custom_id": [request("same"), request("same")],
    "custom_id with a space": [request("has space")],
    "custom_id too long": [request("x" * 65)],
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_request_list_is_refused_at_creation(emulator: EmulatorHandle, case: str) -> None:
    client = anthropic_client(emulator)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=REFUSED[case])
    assert info.value.status_code == 400 and "requests" in info.value.message
    assert batch_calls(emulator, "batch_create") == []


def test_configured_request_and_size_limits(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0, max_lines=2)
    client = anthropic_client(emulator)
    assert start(client, 2).processing_status == "in_progress"
    with pytest.raises(anthropic.BadRequestError, match="at most 2"):
        start(client, 3)
    configure_batches(emulator, completion_s=0, max_bytes=2000)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.batches.create(requests=[request("big", system="x" * 3000)])
    assert info.value.status_code == 413


def test_results_wait_for_the_end_and_delete_needs_it(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=3600)
    client = anthropic_client(emulator)
    created = start(client, 2)
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(created.id)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(created.id)
    assert finish_now(emulator, created.id)["status"] == "completed"
    with pytest.raises(anthropic.BadRequestError, match="ended"):
        client.messages.batches.cancel(created.id)
    assert set(results(client, created.id)) == {"r0", "r1"}
    assert client.messages.batches.delete(created.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_list_pages_newest_first(emulator: EmulatorHandle) -> None:
    client = anthropic_client(emulator)
    ids = [start(client, 1).id for _ in range(3)]
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    assert first.last_id == ids[1]
    listed = [b.id for b in client.messages.batches.list(limit=2)]  # the SDK follows the pages
    assert [i for i in listed if i in ids] == ids[::-1]
    newer = client.messages.batches.list(before_id=ids[0], limit=5)
    assert [b.id for b in newer.data][-2:] == [ids[2], ids[1]]


def test_requests_need_the_anthropic_headers(emulator: EmulatorHandle) -> None:
    r = httpx.get(f"{emulator.url}/anthropic/v1/messages/batches", headers={"x-api-key": "k"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(
        f"{emulator.url}/anthropic/v1/messages/batches", headers={"anthropic-version": "2023-06-01"}
    )
    assert r.status_code == 401
