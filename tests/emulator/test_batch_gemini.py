"""Gemini's Batch Mode in the emulator, through the official google-genai SDK over HTTP.

The SDK's `BatchJob` carries no request counts for the Gemini Developer API, so progress
mid-way is read from the emulator's control surface.
"""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import EmulatorHandle
from tests.emulator.batch_support import (
    batch_calls,
    configure_batches,
    control_batch,
    gemini_client,
    wait_until,
)

MODEL = "gemini-2.5-flash"


def inlined(count: int) -> list[Any]:
    return [
        {
            "contents": [{"role": "user", "parts": [{"text": f"question number g{i}"}]}],
            "metadata": {"key": f"g{i}"},
        }
        for i in range(count)
    ]


def until_done(client: genai.Client, name: str) -> types.BatchJob:
    return wait_until(lambda: client.batches.get(name=name), lambda job: bool(job.done))


def responses(job: types.BatchJob) -> list[types.InlinedResponse]:
    assert job.dest is not None and job.dest.inlined_responses is not None
    return job.dest.inlined_responses


def test_lifecycle_with_inlined_results(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=1.5)
    client = gemini_client(emulator)
    created = client.batches.create(model=MODEL, src=inlined(4), config={"display_name": "nightly"})
    assert created.name is not None and created.name.startswith("batches/")
    assert created.state == types.JobState.JOB_STATE_PENDING and created.display_name == "nightly"
    batch_id = created.name.removeprefix("batches/")
    wait_until(lambda: control_batch(emulator, batch_id), lambda row: row["done"] > 0)
    running = client.batches.get(name=created.name)
    assert running.state == types.JobState.JOB_STATE_RUNNING and not running.done
    job = until_done(client, created.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.end_time is not None
    assert job.model == f"models/{MODEL}"
    rows = responses(job)
    assert [row.metadata for row in rows] == [{"key": f"g{i}"} for i in range(4)]
    for i, row in enumerate(rows):
        assert row.error is None and row.response is not None
        assert row.response.text is not None and f"question number g{i}" in row.response.text
        assert row.response.usage_metadata is not None
        assert (row.response.usage_metadata.prompt_token_count or 0) > 0
    assert len(batch_calls(emulator, "batch_create", batch_id)) == 1
    assert len(batch_calls(emulator, "batch_poll", batch_id)) >= 2


def test_line_failures_and_cancel_mid_way(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, seed=5, completion_s=3, line_failure_rate=0.4)
    client = gemini_client(emulator)
    created = client.batches.create(model=MODEL, src=inlined(10))
    assert created.name is not None
    batch_id = created.name.removeprefix("batches/")
    wait_until(lambda: control_batch(emulator, batch_id), lambda row: row["done"] >= 3)
    client.batches.cancel(name=created.name)
    job = until_done(client, created.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED
    rows = responses(job)
    ran = control_batch(emulator, batch_id)["done"]
    assert 3 <= ran < 10
    assert all(row.error is not None and row.error.code == 499 for row in rows[ran:])
    failed = [row for row in rows[:ran] if row.error is not None]
    assert all(row.error is not None and row.error.code == 500 for row in failed)
    assert len(failed) == control_batch(emulator, batch_id)["errored"]
    with pytest.raises(errors.ClientError):
        client.batches.cancel(name=created.name.replace(batch_id, "missing"))


def test_expiry(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=4, expire_after_s=1.1)
    client = gemini_client(emulator)
    created = client.batches.create(model=MODEL, src=inlined(10))
    assert created.name is not None
    job = until_done(client, created.name)
    assert job.state == types.JobState.JOB_STATE_EXPIRED
    rows = responses(job)
    assert [row.response is not None for row in rows] == [True, True] + [False] * 8
    assert {row.error.code for row in rows[2:] if row.error} == {504}


def test_requests_refused_at_creation(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, models=[MODEL], max_bytes=2000)
    client = gemini_client(emulator)
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model="gemini-unknown", src=inlined(1))
    assert info.value.code == 404
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model=MODEL, src=inlined(40))
    assert info.value.code == 400 and "size" in str(info.value.message)
    assert batch_calls(emulator, "batch_create") == []


def test_list_and_delete(emulator: EmulatorHandle) -> None:
    configure_batches(emulator, completion_s=0)
    client = gemini_client(emulator)
    names = [client.batches.create(model=MODEL, src=inlined(1)).name for _ in range(3)]
    listed = [job.name for job in client.batches.list(config={"page_size": 2})]  # follows the pages
    assert [n for n in listed if n in names] == names[::-1]
    assert names[0] is not None
    client.batches.delete(name=names[0])
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name=names[0])
    assert info.value.code == 404
