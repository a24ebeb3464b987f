"""Batches keep their promise: at `expires_at` the requests that have not run are cancelled and
written to the error file as `batch_expired` (OpenAI's line: no response, the error), what
already ran is in the output file, and the batch ends `expired`; a document batch's deadline
expires it the same way.

The completion window ("24h") lasts a few seconds here (the API process's setting, lowered
for the test); the provider takes 5 s to answer, so most requests are still
waiting for a worker when the batch expires.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from core.settings import get_settings
from tests.integration.conftest import Stack
from tests.integration.test_openai_compat import jsonl, request_line, upload, wait_batch

WINDOW_S = 3.0
SLOW_MODEL = "gpt-4o"  # the emulator takes 5 s to answer it: most lines are still waiting at expiry
LINES = 400


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def wait_document_batch(stack: Stack, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] not in ("in_progress", "finalizing"):
            return batch
        assert time.monotonic() < deadline, batch["counts"]
        time.sleep(0.3)


def test_an_openai_batch_expires_at_the_end_of_its_window(
    stack: Stack, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "batch_completion_window_s", WINDOW_S)
    stack.emulator.configure({SLOW_MODEL: {"latency_ms": 5000}})
    lines = [json.dumps(request_line(f"r{i}", f"Otters {i}.", model=SLOW_MODEL)) for i in range(LINES)]
    created = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert created.expires_at is not None and created.expires_at - created.created_at <= WINDOW_S + 1
    started = time.monotonic()
    batch = wait_batch(client, created.id, timeout=60)
    assert batch.status == "expired", batch
    assert time.monotonic() - started < 30, "expired at its expires_at, not at a later sweep"
    assert batch.expired_at is not None and batch.expired_at >= created.expires_at
    assert batch.completed_at is None
    counts = batch.request_counts
    assert counts.total == LINES and counts.completed > 0 and counts.failed > 0
    assert counts.completed + counts.failed == LINES
    # What ran is in the output file; what had not is in the error file, as OpenAI writes it.
    output = {line["custom_id"]: line for line in jsonl(client, batch.output_file_id)}
    assert len(output) == counts.completed
    assert all(line["response"]["status_code"] == 200 for line in output.values())
    errors = {line["custom_id"]: line for line in jsonl(client, batch.error_file_id)}
    assert len(errors) == counts.failed and not set(errors) & set(output)
    for line in errors.values():
        assert line["response"] is None
        assert line["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    # The expired requests never reached the provider.
    assert len(stack.emulator.calls(model=SLOW_MODEL)) == counts.completed


def test_a_document_batch_expires_at_its_deadline(stack: Stack) -> None:
    """600 documents whose calls take 5 s, a 3 s deadline: the calls in flight at the deadline
    finish (and are billed), the documents still waiting for a worker are cancelled as
    batch_expired and never sent."""
    stack.emulator.configure({SLOW_MODEL: {"latency_ms": 5000}})
    docs = "\n".join(json.dumps({"id": f"d{i}", "text": f"Otters {i}."}) for i in range(600))
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": SLOW_MODEL, "deadline_s": "3"},
        files={"jsonl": ("docs.jsonl", docs.encode(), "application/x-ndjson")},
    )
    assert r.status_code == 202, r.text
    batch = wait_document_batch(stack, r.json()["id"])
    assert batch["status"] == "expired", batch
    counts = batch["counts"]
    assert counts["succeeded"] > 0 and counts["cancelled"] > 0, counts
    assert counts["succeeded"] + counts["failed"] + counts["cancelled"] == 600
    results = stack.client.get(f"/v1/document_batches/{batch['id']}/results").text.splitlines()
    expired = [row for row in map(json.loads, results) if row["status"] == "cancelled"]
    assert len(expired) == counts["cancelled"]
    assert {row["error"]["code"] for row in expired} == {"batch_expired"}
    assert len(stack.emulator.calls(model=SLOW_MODEL)) == counts["succeeded"] + counts["failed"] < 600
