"""Native document batches on the real stack: per-line failures, progress and results,
map-reduce of a document longer than its model's context, reject, cancel, the webhook, and a
2,000-line batch accepted in one request and dispatched."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from tests.integration.conftest import Stack

PROMPT = "Summarise this document in one sentence:\n\n{document}"
ENDED = ("completed", "cancelled", "failed")


def submit(
    stack: Stack, *, jsonl: str | None = None, files: list[tuple[str, str]] | None = None, **form: Any
) -> dict[str, Any]:
    data = {"prompt": PROMPT, **{k: str(v) for k, v in form.items()}}
    upload: list[tuple[str, Any]] = []
    if jsonl is not None:
        upload.append(("jsonl", ("docs.jsonl", jsonl.encode(), "application/x-ndjson")))
    for name, text in files or []:
        upload.append(("files", (name, text.encode(), "text/plain")))
    r = stack.client.post("/v1/document_batches", data=data, files=upload, timeout=120)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def wait(stack: Stack, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] in ENDED:
            return batch
        assert time.monotonic() < deadline, f"still {batch['status']}: {batch['counts']}"
        time.sleep(0.2)


def results(stack: Stack, batch_id: str) -> dict[str, dict[str, Any]]:
    """Result rows by id (a duplicate id's failed line is keyed `<id>@<line>`)."""
    r = stack.client.get(f"/v1/document_batches/{batch_id}/results")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    rows: dict[str, dict[str, Any]] = {}
    for row in map(json.loads, r.text.splitlines()):
        rows[row["id"] if row["id"] not in rows else f"{row['id']}@{row['line']}"] = row
    return rows


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_malformed_lines_fail_alone_and_the_rest_run(
    stack: Stack, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    lines = [
        json.dumps({"id": f"d{i}", "text": f"Paper {i} studies otters and rivers.", "metadata": {"n": i}})
        for i in range(1, 9)
    ]
    lines[2] = '{"id": "d3", "text": "unterminated'  # line 3: not JSON
    lines[4] = json.dumps({"id": "d1", "text": "again"})  # line 5: duplicate id
    lines[6] = json.dumps({"id": "d7"})  # line 7: no text
    batch = submit(
        stack, jsonl="\n".join(lines), model="gpt-4o-mini", webhook_url=url, metadata='{"team": "x"}'
    )
    assert batch["counts"]["total"] == 8
    assert [e["line"] for e in batch["errors"]] == [3, 5, 7]

    done = wait(stack, batch["id"])
    assert done["status"] == "completed"
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (5, 3)
    assert done["input_tokens"] > 0 and float(done["cost_usd"]) > 0 and done["eta_s"] == 0
    rows = results(stack, batch["id"])
    assert rows["d2"]["status"] == "succeeded" and "Paper 2 studies otters" in rows["d2"]["result"]
    assert rows["d2"]["metadata"] == {"n": 2} and rows["d2"]["provider"] == "openai"
    failures = {r["line"]: r["error"]["message"] for r in rows.values() if r["status"] == "failed"}
    assert set(rows) == {"d1", "d2", "line-3", "d4", "d1@5", "d6", "d7", "d8"}
    assert failures[3].startswith("line 3: not valid JSON")
    assert failures[5] == "line 5: duplicate id 'd1'"
    assert failures[7] == "line 7: 'text' must be a non-empty string"

    table = list(
        csv.DictReader(
            io.StringIO(
                stack.client.get(f"/v1/document_batches/{batch['id']}/results", params={"format": "csv"}).text
            )
        )
    )
    assert len(table) == 8 and table[0]["id"] == "d1" and table[0]["status"] == "succeeded"

    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert received[0]["type"] == "batch.completed" and received[0]["data"]["id"] == batch["id"]
    assert received[0]["data"]["request_counts"] == {"total": 8, "completed": 5, "failed": 3}


def long_document(min_tokens: int) -> str:
    """Text that tokenizes densely (so the upload stays small) to at least min_tokens."""
    from routing.tokens import encode

    rng = random.Random(7)
    words = [
        f"{rng.choice('bcdfgk')}{rng.randint(0, 999)}{rng.choice('xqz')}" for _ in range(min_tokens // 2)
    ]
    text = "The long report begins here. " + " ".join(words)
    while len(encode(text)) < min_tokens:
        text += " " + " ".join(words[: min_tokens // 10])
    return text


def test_document_longer_than_its_model_is_mapped_then_reduced(stack: Stack) -> None:
    from routing.tokens import encode

    text = long_document(300_000)  # gpt-4o-mini's window is 128,000 tokens
    batch = submit(
        stack,
        files=[("short.txt", "A short memo about lunch."), ("long.txt", text)],
        model="gpt-4o-mini",
        max_tokens=100,
    )
    done = wait(stack, batch["id"], timeout=180)
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 2, done
    doc = stack.client.get(f"/v1/document_batches/{batch['id']}/documents/long.txt").json()
    expected_parts = math.ceil(len(encode(text)) / 125_000)
    assert doc["parts"] == len(doc["parts_detail"]) >= expected_parts >= 3
    assert all(p["status"] == "succeeded" for p in doc["parts_detail"])
    assert (
        doc["parts_detail"][0]["input_tokens"] > 60_000
    )  # a full part (the emulator counts ~4 chars a token)
    # one answer, from the reduce, which saw every part's answer
    assert doc["status"] == "succeeded"
    assert f"split into {doc['parts']} consecutive parts" in doc["result"]
    parts_cost = sum(float(p["cost_usd"]) for p in doc["parts_detail"])
    assert float(doc["cost_usd"]) > parts_cost > 0
    calls = stack.emulator.calls(model="gpt-4o-mini")
    assert len(calls) == 1 + doc["parts"] + 1


def test_reject_fails_only_the_long_document(stack: Stack) -> None:
    batch = submit(
        stack,
        files=[("short.txt", "A short memo."), ("long.txt", long_document(140_000))],
        model="gpt-4o-mini",
        on_too_long="reject",
    )
    done = wait(stack, batch["id"])
    rows = results(stack, batch["id"])
    assert (done["counts"]["succeeded"], done["counts"]["failed"]) == (1, 1)
    assert rows["long.txt"]["error"]["code"] == "too_long"
    assert "128000-token context; on_too_long=reject" in rows["long.txt"]["error"]["message"]


def test_cancel_sends_no_queued_document(stack: Stack) -> None:
    stack.emulator.configure({"gpt-4o-mini": {"latency_ms": 300}})
    lines = "\n".join(json.dumps({"id": f"c{i}", "text": f"doc {i}"}) for i in range(300))
    batch = submit(stack, jsonl=lines, model="gpt-4o-mini")
    while stack.client.get(f"/v1/document_batches/{batch['id']}").json()["counts"]["succeeded"] < 3:
        time.sleep(0.05)
    r = stack.client.post(f"/v1/document_batches/{batch['id']}/cancel")
    assert r.json()["status"] in ("cancelling", "cancelled")
    done = wait(stack, batch["id"])
    assert done["status"] == "cancelled"
    counts = done["counts"]
    assert counts["cancelled"] > 0 and counts["succeeded"] >= 3 and counts["queued"] == counts["running"] == 0
    assert counts["succeeded"] + counts["failed"] + counts["cancelled"] == 300
    # Only calls already claimed by a worker when the cancel landed went out (at most the
    # worker's 50 threads); the ~280 documents still queued never reached the provider.
    calls = len(stack.emulator.calls(model="gpt-4o-mini"))
    assert counts["succeeded"] <= calls <= counts["succeeded"] + 50 < 300


def test_bad_options_are_4xx_naming_the_field(stack: Stack) -> None:
    form = {"prompt": "no placeholder"}
    r = stack.client.post("/v1/document_batches", data=form, files=[("files", ("a.txt", b"x"))])
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"
    r = stack.client.post(
        "/v1/document_batches", data={"prompt": PROMPT, "model": "nope"}, files=[("files", ("a.txt", b"x"))]
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "model"
    r = stack.client.post("/v1/document_batches", data={"prompt": PROMPT})
    assert r.status_code == 422 and r.json()["error"]["param"] == "files"


def test_2000_line_batch_is_accepted_in_one_request_and_dispatched(stack: Stack) -> None:
    lines = "\n".join(
        json.dumps({"id": f"n{i}", "text": f"Note {i}: the pump in bay {i % 17} hums."}) for i in range(2000)
    )
    batch = submit(stack, jsonl=lines, model="gpt-4o-mini")
    assert batch["counts"]["total"] == 2000 and batch["errors"] is None
    deadline = time.monotonic() + 150
    while True:  # every job leaves `queued`: the dispatcher got all 20 windows of 100 ids
        counts = stack.client.get(f"/v1/document_batches/{batch['id']}").json()["counts"]
        if counts["queued"] == 0:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)
    assert counts["total"] == 2000 and counts["succeeded"] > 0
    rows = results(stack, batch["id"])
    assert len(rows) == 2000 and rows["n1999"]["line"] == 2000
    finished = [r for r in rows.values() if r["status"] == "succeeded"]
    assert all(f"Note {r['id'][1:]}: the pump" in r["result"] for r in finished)
    stack.client.post(f"/v1/document_batches/{batch['id']}/cancel")  # spare later tests the remaining calls
