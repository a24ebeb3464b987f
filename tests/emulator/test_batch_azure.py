"""Azure OpenAI's global batch in the emulator, through the official `AzureOpenAI` client over HTTP.

Azure's lines name the deployment as their model and its endpoint is spelled without `/v1`;
everything is served under `/azure/openai` and needs `api-version`.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import (
    azure_client,
    batch_calls,
    by_custom_id,
    chat_line,
    configure_batches,
    jsonl,
    openai_client,
    upload,
    wait_until,
)

DEPLOYMENT = "gpt-4o-mini-batch"
ENDPOINT: Any = "/chat/completions"  # Azure's spelling, which the openai SDK's types do not list
TERMINAL = ("completed", "failed", "expired", "cancelled")


def start(client: openai.OpenAI, count: int, **line: Any) -> Batch:
    rows = [chat_line(f"c{i}", model=DEPLOYMENT, url="/chat/completions", **line) for i in range(count)]
    file_id = upload(client, jsonl(rows))
    return client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")


def until_ended(client: openai.OpenAI, batch_id: str) -> Batch:
    return wait_until(lambda: client.batches.retrieve(batch_id), lambda b: b.status in TERMINAL)


def test_lifecycle_with_the_deployment_as_model(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=1)
    client = azure_client(emulator)
    created = start(client, 4)
    assert created.status == "validating" and created.endpoint == "/chat/completions"
    assert created.expires_at is None  # Azure does not expire a batch on its own
    mid = wait_until(
        lambda: client.batches.retrieve(created.id),
        lambda b: b.request_counts is not None and b.request_counts.completed > 0,
    )
    assert mid.status == "in_progress"
    batch = until_ended(client, created.id)
    assert batch.status == "completed" and batch.model == DEPLOYMENT and batch.output_file_id is not None
    output = by_custom_id(client.files.content(batch.output_file_id).text)
    assert set(output) == {"c0", "c1", "c2", "c3"}
    for custom_id, row in output.items():
        body = row["response"]["body"]
        assert body["model"] == DEPLOYMENT and custom_id in body["choices"][0]["message"]["content"]
        assert body["usage"]["total_tokens"] > 0
    operations = [c for c in emulator.calls(scope="batch") if c["provider"] == "azure"]
    assert {"file_upload", "batch_create", "batch_poll", "file_download"} <= {c["kind"] for c in operations}
    assert batch_calls(emulator, "batch_create", created.id)[0]["model"] == DEPLOYMENT


def test_the_v1_spelling_of_the_endpoint_is_accepted(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = azure_client(emulator)
    rows = [chat_line("a", model=DEPLOYMENT, url="/v1/chat/completions")]
    file_id = upload(client, jsonl(rows))
    created = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    assert until_ended(client, created.id).status == "completed"


def test_every_call_needs_api_version(emulator: EmulatorHandle) -> None:
    for path in ("/azure/openai/batches", "/azure/openai/files"):
        r = httpx.get(f"{emulator.url}{path}")
        assert r.status_code == 404 and "api-version" in r.json()["error"]["message"]
    assert httpx.get(f"{emulator.url}/azure/openai/batches", params={"api-version": "2024-10-21"}).is_success


def test_files_and_batches_are_apart_from_openai(emulator: EmulatorHandle) -> None:
    openai_file = upload(openai_client(emulator), jsonl([chat_line("a")]))
    client = azure_client(emulator)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(openai_file)
    azure_batch = start(client, 1)
    with pytest.raises(openai.NotFoundError):
        openai_client(emulator).batches.retrieve(azure_batch.id)


def test_expiry_configured_for_azure_alone(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=4, providers={"azure": {"expire_after_s": 1.1}})
    client = azure_client(emulator)
    created = start(client, 10)
    assert created.expires_at - created.created_at in (1, 2)  # 1.1 s, in whole seconds either way
    batch = until_ended(client, created.id)
    assert batch.status == "expired" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 8)
    assert batch.error_file_id is not None
    errors = by_custom_id(client.files.content(batch.error_file_id).text)
    assert {row["error"]["code"] for row in errors.values()} == {"batch_expired"}
    other = openai_client(emulator)
    file_id = upload(other, jsonl([chat_line("a")]))
    unscoped = other.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert unscoped.expires_at == unscoped.created_at + 24 * 3600


def test_cancel_mid_way_and_line_failures(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, seed=3, completion_s=2, line_failure_rate=0.3)
    client = azure_client(emulator)
    created = start(client, 10)
    wait_until(lambda: control_done(emulator, created.id), lambda done: done >= 3)
    assert client.batches.cancel(created.id).status == "cancelling"
    batch = until_ended(client, created.id)
    assert batch.status == "cancelled" and batch.request_counts is not None
    errors = errors_of(client, batch)
    failed_lines = [row for row in errors.values() if row["response"] is not None]
    assert all(row["response"]["status_code"] == 500 for row in failed_lines)
    assert 3 <= batch.request_counts.completed + len(failed_lines) < 10
    assert batch.request_counts.failed == len(errors)
    unrun = [row for row in errors.values() if row["response"] is None]
    assert unrun and {row["error"]["code"] for row in unrun} == {"batch_cancelled"}


def control_done(emulator: EmulatorHandle, batch_id: str) -> int:
    rows = httpx.get(f"{emulator.url}/_emulator/batches", params={"provider": "azure"}).json()
    return int(next(row["done"] for row in rows if row["id"] == batch_id))


def errors_of(client: openai.OpenAI, batch: Batch) -> dict[str, dict[str, Any]]:
    assert batch.error_file_id is not None
    return by_custom_id(client.files.content(batch.error_file_id).text)
