"""The OpenAI-compatible surface with the official `openai` SDK as the client, unchanged but
for base_url: files, batches (output and error files matched by custom_id, cancel, list
pagination) and chat completions with and without streaming, on the real stack."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
import pytest

from tests.integration.conftest import Stack

ENDED_BATCH = ("completed", "failed", "cancelled", "expired")


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def request_line(custom_id: str, text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50},
    }


def upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch").id


def wait_batch(client: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ENDED_BATCH:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.2)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]


def test_batch_of_100_requests_completes_with_every_custom_id_matched(client: openai.OpenAI) -> None:
    lines = [
        json.dumps(request_line(f"req-{i}", f"Document number {i} about topic {i * 7}")) for i in range(99)
    ]
    lines.insert(41, '{"custom_id": "broken", "method": "POST", "url": ')  # malformed: line 42
    file_id = upload(client, lines)
    assert client.files.retrieve(file_id).purpose == "batch"
    created = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"suite": "sdk"},
    )
    assert created.status in ("validating", "in_progress")
    assert created.request_counts is not None and created.request_counts.total == 100
    assert created.errors is not None and created.errors.data[0].line == 42

    batch = wait_batch(client, created.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (99, 1)
    assert batch.completed_at is not None and batch.metadata == {"suite": "sdk"}

    output = jsonl(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in output) == sorted(f"req-{i}" for i in range(99))
    for row in output:
        body = row["response"]["body"]
        number = row["custom_id"].split("-")[1]
        assert row["response"]["status_code"] == 200 and row["error"] is None
        assert f"Document number {number} about" in body["choices"][0]["message"]["content"]
        assert body["object"] == "chat.completion" and body["usage"]["prompt_tokens"] > 0
    errors = jsonl(client, batch.error_file_id)
    assert len(errors) == 1 and errors[0]["custom_id"] is None
    assert errors[0]["error"]["message"].startswith("line 42: not valid JSON")


def test_cancelled_batch_ends_cancelled_with_partial_output(client: openai.OpenAI, stack: Stack) -> None:
    stack.emulator.configure({"gpt-4o-mini": {"latency_ms": 400}})
    file_id = upload(client, [json.dumps(request_line(f"c-{i}", f"slow request {i}")) for i in range(400)])
    created = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while client.batches.retrieve(created.id).request_counts.completed < 5:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait_batch(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    output, errors = jsonl(client, batch.output_file_id), jsonl(client, batch.error_file_id)
    assert len(output) >= 5 and len(output) < 400
    assert {r["custom_id"] for r in output} | {r["custom_id"] for r in errors} == {
        f"c-{i}" for i in range(400)
    }
    assert {r["error"]["code"] for r in errors} == {"batch_cancelled"}
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(output) and batch.request_counts.failed == len(errors)
    # cancelled requests were never sent: the emulator saw fewer calls than requests
    assert len(stack.emulator.calls(model="gpt-4o-mini")) < 400


def test_batches_list_pages_and_stops(client: openai.OpenAI) -> None:
    file_id = upload(client, [json.dumps(request_line("only", "hello"))])
    made = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    seen = [
        b.id for b in client.batches.list(limit=2)
    ]  # auto-pagination follows `after` until has_more is false
    assert set(made) <= set(seen) and len(seen) == len(set(seen))
    assert seen.index(made[-1]) < seen.index(made[0])  # newest first


def test_chat_completion_without_and_with_stream(stack: Stack, client: openai.OpenAI) -> None:
    # The answer's words leave the emulator 20 ms apart, as a model's would: a worker merges
    # deltas that arrive while its last one is still being published, so words sent all at
    # once may reach a client in one piece on a loaded box.
    stack.emulator.configure({"gpt-4o-mini": {"stream_chunk_ms": 20}})
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi to the compat layer"}]
    )
    assert reply.object == "chat.completion" and reply.model == "gpt-4o-mini"
    assert "Say hi to the compat layer" in (reply.choices[0].message.content or "")
    assert (
        reply.usage is not None
        and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    )

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Stream this sentence back"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Stream this sentence back" in text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # it came in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_routing_alias_and_openai_shaped_errors(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="cost", messages=[{"role": "user", "content": "cheapest please"}]
    )
    assert reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9-imaginary", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=7
        )
    assert bad.value.param == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_does_not_exist")
