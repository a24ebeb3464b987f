"""OpenAI's Files and Batches APIs in the emulator, through the official openai SDK over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import (
    CHAT_URL,
    batch_calls,
    by_custom_id,
    chat_line,
    configure_batches,
    control_batch,
    finish_now,
    jsonl,
    openai_client,
    upload,
    wait_until,
)

TERMINAL = ("completed", "failed", "expired", "cancelled")


def create(client: openai.OpenAI, file_id: str, endpoint: Any = "/v1/chat/completions", **kw: Any) -> Batch:
    return client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h", **kw)


def start(client: openai.OpenAI, rows: list[dict[str, Any]], **kw: Any) -> Batch:
    return create(client, upload(client, jsonl(rows)), **kw)


def counts(batch: Batch) -> tuple[int, int, int]:
    """request_counts as (total, completed, failed)."""
    assert batch.request_counts is not None
    return batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed


def until_ended(client: openai.OpenAI, batch_id: str) -> Batch:
    return wait_until(lambda: client.batches.retrieve(batch_id), lambda b: b.status in TERMINAL)


def results(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    return by_custom_id(client.files.content(file_id).text) if file_id else {}


def test_lifecycle_to_completed_with_results_by_custom_id(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=1.5, validating_s=0.3, finalizing_s=0.3)
    client = openai_client(emulator)
    rows = [chat_line(f"c{i}") for i in range(6)]
    created = start(client, rows, metadata={"job": "nightly"})
    assert created.status == "validating"
    assert created.request_counts is not None and created.request_counts.total == 0
    seen: list[str] = [created.status]
    polls = 0

    def poll() -> Batch:
        nonlocal polls
        polls += 1
        batch = client.batches.retrieve(created.id)
        if batch.status != seen[-1]:
            seen.append(batch.status)
        return batch

    batch = wait_until(poll, lambda b: b.status in TERMINAL)
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert seen == sorted(seen, key=order.index) and "in_progress" in seen and seen[-1] == "completed"
    stamps = [batch.created_at, batch.in_progress_at, batch.finalizing_at, batch.completed_at]
    assert None not in stamps and stamps == sorted(stamps)  # type: ignore[type-var]
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert counts(batch) == (6, 6, 0)
    assert batch.error_file_id is None and batch.model == "gpt-4o-mini"
    assert batch.metadata == {"job": "nightly"}

    output = results(client, batch.output_file_id)
    assert set(output) == {f"c{i}" for i in range(6)}
    total_tokens = 0
    for custom_id, row in output.items():
        assert row["error"] is None and row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["object"] == "chat.completion"
        assert f"question number {custom_id}" in body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
        total_tokens += body["usage"]["total_tokens"]
    assert batch.usage is not None and batch.usage.total_tokens == total_tokens

    assert batch.output_file_id is not None
    output_file = client.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output" and output_file.bytes > 0
    assert len(batch_calls(emulator, "batch_create")) == 1
    assert len(batch_calls(emulator, "batch_poll", created.id)) == polls
    assert len(batch_calls(emulator, "file_upload")) == 1


def test_a_poll_mid_way_sees_partial_counts(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=2)
    client = openai_client(emulator)
    created = start(client, [chat_line(f"c{i}") for i in range(20)])
    mid = wait_until(
        lambda: client.batches.retrieve(created.id),
        lambda b: b.request_counts is not None and b.request_counts.completed > 0,
    )
    assert mid.status == "in_progress" and mid.request_counts is not None
    assert mid.request_counts.total == 20 and 0 < mid.request_counts.completed < 20
    assert mid.output_file_id is None
    assert 0 < control_batch(emulator, created.id)["done"] < 20
    done = until_ended(client, created.id)
    assert done.request_counts is not None and done.request_counts.completed == 20


def test_line_failures_at_the_configured_rate_go_to_the_error_file(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, seed=7, completion_s=0, line_failure_rate=0.5)
    client = openai_client(emulator)
    rows = [chat_line(f"c{i}") for i in range(40)]
    batch = until_ended(client, start(client, rows).id)
    assert batch.status == "completed"
    output, errors = results(client, batch.output_file_id), results(client, batch.error_file_id)
    assert 5 < len(errors) < 35
    assert set(output) | set(errors) == {r["custom_id"] for r in rows} and not set(output) & set(errors)
    assert counts(batch) == (40, len(output), len(errors))
    for row in errors.values():
        assert row["response"]["status_code"] == 500
        assert row["response"]["body"]["error"]["type"] == "server_error"
    again = until_ended(client, start(client, rows).id)
    assert set(results(client, again.error_file_id)) == set(errors)  # the same lines fail: by seed


def test_an_invalid_line_body_is_a_400_in_the_error_file(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = openai_client(emulator)
    batch = until_ended(client, start(client, [chat_line("good"), chat_line("empty", messages=[])]).id)
    errors = results(client, batch.error_file_id)
    assert set(errors) == {"empty"} and errors["empty"]["response"]["status_code"] == 400
    assert set(results(client, batch.output_file_id)) == {"good"}


def test_expiry_keeps_the_lines_done_and_expires_the_rest(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=4, expire_after_s=1.1)
    client = openai_client(emulator)
    created = start(client, [chat_line(f"c{i}") for i in range(10)])
    # 1.1 s after creation, both in whole seconds: 1 or 2 apart, as the creation's fraction falls
    assert created.expires_at is not None and created.expires_at - created.created_at in (1, 2)
    batch = until_ended(client, created.id)
    # Lines are due every 0.4 s: c0 and c1 are done when the batch expires at 1.1 s.
    assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
    assert counts(batch) == (10, 2, 8)
    assert set(results(client, batch.output_file_id)) == {"c0", "c1"}
    errors = results(client, batch.error_file_id)
    assert set(errors) == {f"c{i}" for i in range(2, 10)}
    assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in errors.values())


def test_cancel_mid_way_keeps_the_finished_lines(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=3, cancelling_s=0.3)
    client = openai_client(emulator)
    created = start(client, [chat_line(f"c{i}") for i in range(10)])
    before = wait_until(
        lambda: client.batches.retrieve(created.id),
        lambda b: b.request_counts is not None and b.request_counts.completed >= 2,
    )
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = until_ended(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None and batch.request_counts is not None
    kept = batch.request_counts.completed
    assert before.request_counts is not None and before.request_counts.completed <= kept < 10
    output, errors = results(client, batch.output_file_id), results(client, batch.error_file_id)
    assert set(output) == {f"c{i}" for i in range(kept)}
    assert len(errors) == 10 - kept == batch.request_counts.failed
    assert all(r["error"]["code"] == "batch_cancelled" for r in errors.values())
    assert len(batch_calls(emulator, "batch_cancel", created.id)) == 1


def test_an_ended_batch_cannot_be_cancelled(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = openai_client(emulator)
    batch = until_ended(client, start(client, [chat_line("c0")]).id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def bad_json_line() -> bytes:
    return jsonl([chat_line("a")]) + b"{not json\n" + jsonl([chat_line("b")])


MISSING = "missing_required_parameter"
INVALID_FILES: dict[str, tuple[bytes, str, int | None]] = {
    "bad JSON line": (bad_json_line(), "invalid_json_line", 2),
    "unknown model": (jsonl([chat_line("a", model="gpt-unknown")]), "model_not_found", 1),
    "mixed models": (jsonl([chat_line("a"), chat_line("b", model="gpt-4o")]), "model_mismatch", 2),
    "duplicate custom_id": (jsonl([chat_line("a"), chat_line("a")]), "duplicate_custom_id", 2),
    "url not the endpoint": (jsonl([chat_line("a", url="/v1/embeddings")]), "url_mismatch", 1),
    "no custom_id": (jsonl([{"method": "POST", "url": CHAT_URL, "body": {}}]), MISSING, 1),
    "empty file": (b"\n", "empty_file", None),
}


@pytest.mark.parametrize("case", list(INVALID_FILES))
def test_an_invalid_input_file_fails_validation(emulator: EmulatorHandle, case: str) -> None:
    data, code, line = INVALID_FILES[case]
    configure_batches(emulator, completion_s=0.3, validating_s=0.2, models=["gpt-4o-mini", "gpt-4o"])
    client = openai_client(emulator)
    file_id = upload(client, data)
    created = create(client, file_id)
    assert created.status == "validating"
    batch = until_ended(client, created.id)
    assert batch.status == "failed" and batch.failed_at is not None and batch.errors is not None
    assert batch.errors.data is not None
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == (code, line)
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert control_batch(emulator, batch.id)["done"] == 0  # no line of a failed batch is answered


def test_the_50000_line_limit(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = openai_client(emulator)
    line = json.dumps(chat_line("x", messages=[{"role": "user", "content": "hi"}]))
    data = "".join(line.replace('"x"', f'"r{i}"', 1) + "\n" for i in range(50_001)).encode()
    file_id = upload(client, data)
    created = create(client, file_id)
    batch = until_ended(client, created.id)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "too_many_tasks" and "50000" in (batch.errors.data[0].message or "")
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_configured_line_and_size_limits(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0, max_lines=3, max_bytes=1000)
    client = openai_client(emulator)
    three = until_ended(client, start(client, [chat_line(f"c{i}") for i in range(3)]).id)
    assert three.status == "completed"
    four = until_ended(client, start(client, [chat_line(f"c{i}") for i in range(4)]).id)
    assert four.status == "failed" and four.errors is not None and four.errors.data is not None
    assert four.errors.data[0].code == "too_many_tasks"
    long_prompt = [{"role": "user", "content": "x" * 1000}]
    big = until_ended(client, start(client, [chat_line("c0", messages=long_prompt)]).id)
    assert big.errors is not None and big.errors.data is not None
    assert big.errors.data[0].code == "file_too_large"


def test_requests_refused_at_creation(emulator: EmulatorHandle) -> None:
    client = openai_client(emulator)
    file_id = upload(client, jsonl([chat_line("a")]))
    window: Any = "1h"
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window
        )
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        create(client, file_id, "/v1/responses")
    with pytest.raises(openai.BadRequestError, match="metadata"):
        create(client, file_id, metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(openai.NotFoundError):
        create(client, "file-missing")
    other = client.files.create(file=("notes.jsonl", b"{}\n"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError, match="purpose"):
        create(client, other)
    with pytest.raises(openai.BadRequestError, match="jsonl"):
        client.files.create(file=("input.csv", b"a,b\n"), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    assert batch_calls(emulator, "batch_create") == []  # refused requests create nothing


def test_embeddings_batch(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = openai_client(emulator)
    url = "/v1/embeddings"
    rows = [
        {"custom_id": "one", "method": "POST", "url": url, "body": {"model": "e", "input": "sea"}},
        {
            "custom_id": "two",
            "method": "POST",
            "url": url,
            "body": {"model": "e", "input": ["sea", "sky"], "dimensions": 8},
        },
    ]
    created = create(client, upload(client, jsonl(rows)), url)
    output = results(client, until_ended(client, created.id).output_file_id)
    one = output["one"]["response"]["body"]
    two = output["two"]["response"]["body"]
    assert len(one["data"]) == 1 and len(one["data"][0]["embedding"]) == 16
    assert [len(d["embedding"]) for d in two["data"]] == [8, 8]
    assert two["data"][0]["embedding"] != two["data"][1]["embedding"]
    assert math.isclose(sum(v * v for v in two["data"][1]["embedding"]), 1, abs_tol=1e-4)
    assert one["usage"]["prompt_tokens"] > 0


def test_list_pages_newest_first(emulator: EmulatorHandle) -> None:
    client = openai_client(emulator)
    ids = [start(client, [chat_line("a")]).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    listed = [b.id for b in client.batches.list(limit=2)]  # the SDK follows the pages
    assert [i for i in listed if i in ids] == ids[::-1]
    assert len(batch_calls(emulator, "batch_list")) >= 3


def test_the_control_surface_completes_a_batch_now(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=3600)
    client = openai_client(emulator)
    created = start(client, [chat_line(f"c{i}") for i in range(3)])
    assert control_batch(emulator, created.id)["status"] in ("validating", "in_progress")
    assert finish_now(emulator, created.id)["status"] == "completed"
    batch = client.batches.retrieve(created.id)
    assert batch.status == "completed" and set(results(client, batch.output_file_id)) == {"c0", "c1", "c2"}
    assert httpx.post(f"{emulator.url}/_emulator/batches/batch_missing/complete").status_code == 404


def test_async_client(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)

    async def go() -> str:
        client = openai.AsyncOpenAI(base_url=f"{emulator.url}/openai/v1", api_key="k", max_retries=0)
        uploaded = await client.files.create(file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch")
        created = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while (batch := await client.batches.retrieve(created.id)).status not in TERMINAL:
            await asyncio.sleep(0.05)
        assert batch.output_file_id is not None
        text = (await client.files.content(batch.output_file_id)).text
        await client.close()
        return text

    assert set(by_custom_id(asyncio.run(go()))) == {"a"}
