"""Mistral's batch jobs in the emulator, through the official mistralai SDK over HTTP."""

from __future__ import annotations

import json
from typing import Any, Final

import httpx
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError
from mistralai.client.models import BatchJob

from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import (
    batch_calls,
    by_custom_id,
    configure_batches,
    mistral_client,
    wait_until,
)

MODEL = "mistral-small-latest"
ENDPOINT: Final = "/v1/chat/completions"
ENDED = ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED")


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"m{i}",
            "body": {"max_tokens": 64, "messages": [{"role": "user", "content": f"number m{i}"}]},
        }
        for i in range(count)
    ]


def upload(client: Mistral, data: bytes) -> str:
    return client.files.upload(file={"file_name": "input.jsonl", "content": data}, purpose="batch").id


def start(client: Mistral, count: int) -> BatchJob:
    data = "".join(json.dumps(row) + "\n" for row in rows(count)).encode()
    return client.batch.jobs.create(input_files=[upload(client, data)], model=MODEL, endpoint=ENDPOINT)


def until_ended(client: Mistral, job_id: str) -> BatchJob:
    return wait_until(lambda: client.batch.jobs.get(job_id=job_id), lambda job: job.status in ENDED)


def download(client: Mistral, file_id: Any) -> dict[str, dict[str, Any]]:
    assert isinstance(file_id, str)
    return by_custom_id(client.files.download(file_id=file_id).read().decode())


def test_lifecycle_from_an_input_file(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=1.5)
    client = mistral_client(emulator)
    created = start(client, 5)
    assert created.status == "QUEUED" and created.total_requests == 5 and created.model == MODEL
    mid = wait_until(lambda: client.batch.jobs.get(job_id=created.id), lambda job: job.completed_requests > 0)
    assert mid.status == "RUNNING" and mid.completed_requests < 5 and mid.started_at is not None
    job = until_ended(client, created.id)
    assert job.status == "SUCCESS" and job.completed_at is not None
    assert (job.succeeded_requests, job.failed_requests) == (5, 0) and job.error_file is None
    output = download(client, job.output_file)
    assert set(output) == {f"m{i}" for i in range(5)}
    for custom_id, row in output.items():
        body = row["response"]["body"]
        assert row["response"]["status_code"] == 200 and body["model"] == MODEL
        assert f"number {custom_id}" in body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] > 0
    assert len(batch_calls(emulator, "batch_create", created.id)) == 1


def test_inline_requests_failures_and_inline_outputs(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, seed=2, completion_s=0, line_failure_rate=0.5)
    client = mistral_client(emulator)
    created = client.batch.jobs.create(requests=rows(20), model=MODEL, endpoint=ENDPOINT)  # type: ignore[arg-type]
    job = until_ended(client, created.id)
    assert 2 < job.failed_requests < 18 and job.succeeded_requests + job.failed_requests == 20
    errors = download(client, job.error_file)
    assert len(errors) == job.failed_requests
    assert {row["response"]["status_code"] for row in errors.values()} == {500}
    inline = client.batch.jobs.get(job_id=created.id, inline=True)
    assert inline.outputs is not None and len(inline.outputs) == 20  # type: ignore[arg-type]


def test_timeout_and_cancel_keep_the_lines_done(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=4, expire_after_s=1.1)
    client = mistral_client(emulator)
    timed_out = until_ended(client, start(client, 10).id)
    assert timed_out.status == "TIMEOUT_EXCEEDED" and timed_out.completed_requests == 2
    assert set(download(client, timed_out.output_file)) == {"m0", "m1"}
    assert len(download(client, timed_out.error_file)) == 8

    configure_batches(emulator, completion_s=3, cancelling_s=0.3)
    created = start(client, 10)
    wait_until(lambda: client.batch.jobs.get(job_id=created.id), lambda job: job.completed_requests >= 2)
    assert client.batch.jobs.cancel(job_id=created.id).status == "CANCELLATION_REQUESTED"
    job = until_ended(client, created.id)
    assert job.status == "CANCELLED" and 2 <= job.completed_requests < 10
    assert len(download(client, job.output_file)) == job.completed_requests
    unrun = download(client, job.error_file)
    assert len(unrun) == 10 - job.completed_requests and all(row["error"] for row in unrun.values())


def test_a_bad_input_file_fails_the_job(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0.2, validating_s=0.1)
    client = mistral_client(emulator)
    data = b'{"custom_id": "a", "body": {"messages": []}}\nnot json\n{"custom_id": "c"}\n'
    created = client.batch.jobs.create(input_files=[upload(client, data)], model=MODEL, endpoint=ENDPOINT)
    job = until_ended(client, created.id)
    assert job.status == "FAILED" and job.completed_requests == 0
    assert len(job.errors) == 1 and job.errors[0].count == 2 and "body" in job.errors[0].message


def test_requests_refused_at_creation(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, models=[MODEL])
    client = mistral_client(emulator)
    with pytest.raises(MistralError, match="model"):
        client.batch.jobs.create(requests=rows(1), model="mistral-unknown", endpoint=ENDPOINT)  # type: ignore[arg-type]
    with pytest.raises(MistralError, match="not found"):
        client.batch.jobs.create(input_files=["no-such-file"], model=MODEL, endpoint=ENDPOINT)
    assert httpx.get(f"{emulator.url}/mistral/v1/batch/jobs").status_code == 401
    assert batch_calls(emulator, "batch_create") == []
