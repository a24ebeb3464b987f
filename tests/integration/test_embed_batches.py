"""Embedding batches on the real stack: document batches in embed mode (chunks with their ids
and offsets, vectors in order compared with the emulator's, calls counted at the emulator, cost
exact per document and in total, JSONL and .npy results), 10,000 chunks in ceil(10,000 / 96)
Cohere calls, and OpenAI batches of `/v1/embeddings` lines through the official SDK."""

from __future__ import annotations

import io
import json
import math
import random
import re
import struct
import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from emulator.embeddings import embed as emulator_vector
from jobstore.db import transaction
from jobstore.models import Attempt, AttemptStatus, Job
from routing.chunking import chunk_text
from tests.embedding_support import close, floats
from tests.integration.conftest import Stack

ENDED = ("completed", "cancelled", "failed")
MILLION = Decimal(1_000_000)
WORDS = re.findall(
    r"\w+",
    "river gravel salmon spawning bank willow flood meadow lighthouse keeper lamp wick storm harbour "
    "bees hive pollen rooftop garden sourdough starter flour water rye crumb oven tea leaf steep kettle "
    "porcelain report revenue quarter margin incident outage pager rollback",
)


def submit_embed(
    stack: Stack, files: list[tuple[str, str]] | None = None, jsonl: str | None = None, **form: Any
) -> Any:
    upload: list[tuple[str, Any]] = [("files", (n, t.encode(), "text/plain")) for n, t in files or []]
    if jsonl is not None:
        upload.append(("jsonl", ("docs.jsonl", jsonl.encode(), "application/x-ndjson")))
    return stack.client.post(
        "/v1/document_batches",
        data={"mode": "embed", **{k: str(v) for k, v in form.items()}},
        files=upload,
        timeout=300,
    )


def wait(stack: Stack, batch_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] in ENDED:
            return batch
        assert time.monotonic() < deadline, f"still {batch['status']}: {batch['counts']}"
        time.sleep(0.3)


def jsonl_rows(stack: Stack, batch_id: str, **params: Any) -> list[dict[str, Any]]:
    r = stack.client.get(f"/v1/document_batches/{batch_id}/results", params=params, timeout=300)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        n = min(words, rng.randint(6, 14))
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        words -= n
    return " ".join(sentences)


def failed_attempts(batch_id: str) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(Attempt).join(Job, Job.id == Attempt.job_id)
        failed = query.where(Job.batch_id == batch_id, Attempt.status == AttemptStatus.FAILED.value)
        return int(session.scalar(failed) or 0)


def succeeded_cost(batch_id: str) -> Decimal:
    with transaction() as session:
        query = select(func.coalesce(func.sum(Attempt.cost_usd), 0)).join(Job, Job.id == Attempt.job_id)
        paid = query.where(Job.batch_id == batch_id, Attempt.status == AttemptStatus.SUCCEEDED.value)
        return Decimal(session.scalar(paid) or 0)


def embed_calls(stack: Stack) -> list[dict[str, Any]]:
    return [c for c in stack.emulator.calls() if c["kind"] == "embed"]


def test_documents_are_chunked_embedded_and_priced_per_document(stack: Stack) -> None:
    docs = {"river.txt": document(1, 400), "bees.txt": document(2, 150), "tea.txt": document(3, 30)}
    r = submit_embed(
        stack,
        files=[*docs.items(), ("empty.txt", "   ")],
        model="text-embedding-3-small",
        chunk_tokens=60,
        overlap_tokens=10,
        dimensions=64,
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["mode"] == "embed" and accepted["options"]["chunk_tokens"] == 60
    expected = {name: chunk_text(text, 60, 10) for name, text in docs.items()}
    n_chunks = sum(len(c) for c in expected.values())
    assert accepted["options"]["chunks"] == n_chunks and accepted["options"]["calls"] == 1
    batch = wait(stack, accepted["id"])
    assert batch["status"] == "completed" and batch["counts"]["failed"] == 1  # the empty file

    rows = jsonl_rows(stack, batch["id"], include_text="true")
    refused = [row for row in rows if row["chunk"] is None]
    assert [r["document"] for r in refused] == ["empty.txt"] and "empty" in refused[0]["error"]["message"]
    chunks = [row for row in rows if row["chunk"] is not None]
    assert [(r["document"], r["chunk"]) for r in chunks] == [
        (name, i) for name, pieces in expected.items() for i in range(len(pieces))
    ]
    for row in chunks:
        piece = expected[row["document"]][row["chunk"]]
        assert (row["start"], row["end"]) == (piece.start_char, piece.end_char)
        assert row["text"] == docs[row["document"]][row["start"] : row["end"]] == piece.text
        assert close(row["embedding"], emulator_vector(piece.text, 64))

    calls = embed_calls(stack)
    assert len(calls) == 1 and calls[0]["inputs"] == n_chunks
    total = Decimal(calls[0]["tokens"]) * Decimal("0.02") / MILLION
    assert Decimal(batch["cost_usd"]) == total and batch["input_tokens"] == calls[0]["tokens"]
    per_doc = [
        json.loads(line)
        for line in stack.client.get(f"/v1/document_batches/{batch['id']}/documents").text.splitlines()
    ]
    assert [d["document"] for d in per_doc] == [*docs, "empty.txt"]
    assert sum(Decimal(d["cost_usd"]) for d in per_doc) == total
    assert sum(d["input_tokens"] for d in per_doc) == calls[0]["tokens"]
    assert per_doc[0]["input_tokens"] > per_doc[1]["input_tokens"] > per_doc[2]["input_tokens"] > 0
    assert [d["status"] for d in per_doc] == ["succeeded"] * 3 + ["failed"]
    one = stack.client.get(f"/v1/document_batches/{batch['id']}/documents/bees.txt").json()
    assert one == per_doc[1]
    output = stack.client.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
    assert [json.loads(line) for line in output] == per_doc

    npy = stack.client.get(f"/v1/document_batches/{batch['id']}/results", params={"format": "npy"}).content
    assert npy[:8] == b"\x93NUMPY\x01\x00"
    header_len = struct.unpack("<H", npy[8:10])[0]
    header = npy[10 : 10 + header_len].decode("latin1")
    assert f"'shape': ({n_chunks}, 64)" in header and "'<f4'" in header and (10 + header_len) % 64 == 0
    body = npy[10 + header_len :]
    assert len(body) == n_chunks * 64 * 4
    for i, row in enumerate(chunks):
        assert close(list(struct.unpack("<64f", body[i * 256 : (i + 1) * 256])), row["embedding"])


def test_embed_mode_refusals_name_the_field(stack: Stack) -> None:
    doc = [("a.txt", "some text")]
    chat = submit_embed(stack, files=doc, model="gpt-4o-mini")
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "wrong_model_kind"
    no_model = submit_embed(stack, files=doc)
    assert no_model.status_code == 422 and no_model.json()["error"]["param"] == "model"
    too_big = submit_embed(stack, files=doc, model="embed-english-v3.0", chunk_tokens=600)
    error = too_big.json()["error"]
    assert (
        too_big.status_code == 422
        and error["param"] == "chunk_tokens"
        and "embed-english-v3.0" in error["message"]
    )
    overlap = submit_embed(stack, files=doc, model="mistral-embed", chunk_tokens=50, overlap_tokens=50)
    assert overlap.status_code == 422 and overlap.json()["error"]["param"] == "overlap_tokens"
    lines = "\n".join(
        json.dumps({"id": f"d{i}", "text": "text", **({"model": "embed-v4.0"} if i == 2 else {})})
        for i in range(3)
    )
    mixed = submit_embed(stack, jsonl=lines, model="text-embedding-3-small")
    error = mixed.json()["error"]
    assert mixed.status_code == 400 and error["code"] == "mixed_models"
    assert "line 3" in error["message"] and "embed-v4.0" in error["message"]
    same = lines.replace('"embed-v4.0"', '"openai/text-embedding-3-small"')  # a deployment of the same model
    accepted = submit_embed(stack, jsonl=same, model="text-embedding-3-small")
    assert accepted.status_code == 202
    assert wait(stack, accepted.json()["id"])["status"] == "completed"  # nothing left to reach the next test
    assert (
        stack.client.post("/v1/document_batches", data={}, files=doc and [("files", ("a.txt", b"x"))]).json()[
            "error"
        ]["param"]
        == "prompt"
    )


def test_ten_thousand_chunks_take_ceil_n_over_96_cohere_calls_with_exact_cost(stack: Stack) -> None:
    docs = [{"id": f"doc-{i:03d}", "text": document(100 + i, 3450)} for i in range(100)]
    r = submit_embed(
        stack,
        jsonl="\n".join(json.dumps(d) for d in docs),
        model="embed-v4.0",
        chunk_tokens=40,
        overlap_tokens=0,
        dimensions=256,
        input_type="search_document",
    )
    assert r.status_code == 202, r.text
    options = r.json()["options"]
    chunks = options["chunks"]
    assert chunks >= 10_000
    assert options["calls"] == math.ceil(chunks / 96)
    batch = wait(stack, r.json()["id"], timeout=600)
    assert batch["status"] == "completed" and batch["counts"]["succeeded"] == options["calls"]

    calls = [c for c in embed_calls(stack) if c["status"] == 200]
    # The emulator's own call log: no more calls than that, plus retries. A retry is an attempt
    # that failed on our side (on a loaded box, a call the emulator answered after the client's
    # timeout): each may have been answered at the emulator too, and it cost nothing here.
    retried = failed_attempts(batch["id"])
    assert math.ceil(chunks / 96) <= len(calls) <= math.ceil(chunks / 96) + retried
    price = Decimal("0.12")
    if len(calls) == math.ceil(chunks / 96):
        assert sum(c["inputs"] for c in calls) == chunks
        total = sum((Decimal(c["tokens"]) * price / MILLION for c in calls), Decimal(0))
        assert Decimal(batch["cost_usd"]) == total
    else:  # which of the calls were paid for is in our attempts, not in the emulator's log
        total = Decimal(batch["cost_usd"])
        assert total == succeeded_cost(batch["id"]) > 0
    per_doc = stack.client.get(f"/v1/document_batches/{batch['id']}/documents").text.splitlines()
    assert sum(Decimal(json.loads(line)["cost_usd"]) for line in per_doc) == total

    rows = jsonl_rows(stack, batch["id"], include_text="true", encoding_format="base64")
    assert len(rows) == chunks
    expected = [(d["id"], i, p) for d in docs for i, p in enumerate(chunk_text(d["text"], 40, 0))]
    assert [(r["document"], r["chunk"]) for r in rows] == [(doc_id, i) for doc_id, i, _ in expected]
    for row, (_, _, piece) in zip(rows, expected, strict=True):
        assert (row["start"], row["end"], row["text"]) == (piece.start_char, piece.end_char, piece.text)
    for row in rows:  # every vector is the one the emulator makes of its chunk's text
        assert close(floats(row["embedding"]), emulator_vector(row["text"], 256))


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def embedding_line(custom_id: str, text: str | list[str], **body: Any) -> str:
    request = {"model": "text-embedding-3-small", "input": text, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": request})


def upload(client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch").id


def test_openai_batch_of_embedding_lines_is_packed_into_few_calls(
    stack: Stack, client: openai.OpenAI
) -> None:
    lines = [
        embedding_line(f"req-{i}", f"line {i} about bees and city rooftops", dimensions=32)
        for i in range(300)
    ]
    lines.append(
        embedding_line("pair", ["first of two", "second of two"], dimensions=32, encoding_format="base64")
    )
    lines.append(embedding_line("bad", "", dimensions=32))
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.monotonic() + 120
    while batch.status not in ENDED:
        assert time.monotonic() < deadline
        time.sleep(0.3)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        302,
        301,
        1,
    )
    calls = embed_calls(stack)
    assert len(calls) == 1 and calls[0]["inputs"] == 302, calls
    out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    by_id = {o["custom_id"]: o["response"]["body"] for o in out}
    assert len(by_id) == 301
    assert close(
        by_id["req-7"]["data"][0]["embedding"], emulator_vector("line 7 about bees and city rooftops", 32)
    )
    pair = by_id["pair"]["data"]
    assert [d["index"] for d in pair] == [0, 1]
    assert close(floats(pair[1]["embedding"]), emulator_vector("second of two", 32))
    assert sum(b["usage"]["prompt_tokens"] for b in by_id.values()) == calls[0]["tokens"]
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert [e["custom_id"] for e in errors] == ["bad"]

    mixed = [embedding_line("a", "x"), embedding_line("b", "y", model="mistral-embed")]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=upload(client, mixed), endpoint="/v1/embeddings", completion_window="24h"
        )
    assert refused.value.code == "mixed_models" and "mistral-embed" in refused.value.message
