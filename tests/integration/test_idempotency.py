"""Idempotency-Key on every creating route, on the real stack: the official `openai` SDK
(`extra_headers`) for chat completions, files and batches, plain httpx for jobs and document
batches. A retry gets the same answer with one resource made and one provider call (counted
in the emulator's call log); another body with the key is a 409."""

from __future__ import annotations

import io
import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select, update

from core.clock import utcnow
from jobstore import idempotency
from jobstore.batch_models import Batch, StoredFile
from jobstore.db import transaction
from jobstore.models import IdempotencyRecord, Job
from tests.integration.conftest import Stack, make_key
from tests.integration.test_openai_compat import jsonl, request_line, wait_batch

MODEL = "gpt-4o-mini"


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}


def own_id(stack: Stack) -> str:
    found: str = stack.client.get("/v1/keys/self").json()["id"]
    return found


def count(stack: Stack, table: Any) -> int:
    with transaction() as session:
        return int(
            session.scalar(select(func.count()).select_from(table).where(table.owner_id == own_id(stack)))
            or 0
        )


def job_body(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "model": MODEL, "max_tokens": 20}


# ---------------------------------------------------------------- through the official openai SDK


def test_chat_completion_retry_is_one_job_one_call_same_answer(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    messages: list[Any] = [{"role": "user", "content": "Say hello once"}]
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=20, extra_headers=headers
    )
    second = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=20, extra_headers=headers
    )
    assert first.parse().model_dump() == second.parse().model_dump()
    assert "idempotent-replayed" not in first.headers and second.headers["idempotent-replayed"] == "true"
    assert len(stack.emulator.calls(model=MODEL)) == 1
    assert count(stack, Job) == 1

    with pytest.raises(openai.ConflictError) as conflict:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say goodbye"}],
            max_tokens=20,
            extra_headers=headers,
        )
    error = conflict.value.body
    assert isinstance(error, dict) and (error["code"], error["param"]) == (
        "idempotency_conflict",
        "Idempotency-Key",
    )
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Job) == 1


def test_a_streamed_chat_completion_replays_the_same_text(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()

    def streamed() -> str:
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Stream a short line"}],
            max_tokens=20,
            stream=True,
            extra_headers=headers,
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert streamed() == streamed() != ""
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Job) == 1


def test_a_retry_racing_the_first_gets_its_answer(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    answers: list[Any] = []

    def ask() -> None:
        answers.append(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Race me"}],
                max_tokens=20,
                extra_headers=headers,
            ).model_dump()
        )

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 6 and all(a == answers[0] for a in answers)
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Job) == 1


def test_file_upload_retry_is_one_file(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    content = (json.dumps(request_line("a", "alpha")) + "\n").encode()
    first = client.files.create(
        file=("in.jsonl", io.BytesIO(content)), purpose="batch", extra_headers=headers
    )
    second = client.files.create(
        file=("in.jsonl", io.BytesIO(content)), purpose="batch", extra_headers=headers
    )
    assert first.model_dump() == second.model_dump()  # multipart boundaries differ; the parts do not
    assert count(stack, StoredFile) == 1
    other = (json.dumps(request_line("b", "beta")) + "\n").encode()
    with pytest.raises(openai.ConflictError):
        client.files.create(file=("in.jsonl", io.BytesIO(other)), purpose="batch", extra_headers=headers)
    assert count(stack, StoredFile) == 1


def test_batch_retry_is_one_batch_one_call_per_line(stack: Stack, client: openai.OpenAI) -> None:
    content = "".join(json.dumps(request_line(f"r{i}", f"line {i}")) + "\n" for i in range(3)).encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch").id
    headers = key()
    first = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_headers=headers
    )
    second = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_headers=headers
    )
    assert first.model_dump() == second.model_dump()
    with pytest.raises(openai.ConflictError):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "another"},
            extra_headers=headers,
        )
    done = wait_batch(client, first.id)
    assert (
        done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 3
    )
    assert count(stack, Batch) == 1
    assert len(jsonl(client, done.output_file_id)) == 3
    assert len(stack.emulator.calls(model=MODEL)) == 3  # one call per line, not two


# ---------------------------------------------------------------- plain httpx: jobs, document batches


def test_job_retry_is_one_job_one_call(stack: Stack) -> None:
    headers = key()
    first = stack.submit(job_body("just once"), **headers)
    second = stack.submit(job_body("just once"), **headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    stack.wait(first.json()["id"])
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Job) == 1
    clash = stack.submit(job_body("something else"), **headers)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict"
    assert clash.headers["x-should-retry"] == "false"  # the SDKs must not retry it


def test_the_body_is_compared_as_json_not_as_bytes(stack: Stack) -> None:
    headers = key()
    body = job_body("key order")
    headers["Content-Type"] = "application/json"
    first = stack.client.post("/v1/jobs", content=json.dumps(body), headers=headers)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    second = stack.client.post("/v1/jobs", content=reordered, headers=headers)
    assert first.status_code == 202
    assert second.status_code == 202 and second.json() == first.json()


def test_document_batch_retry_is_one_batch(stack: Stack) -> None:
    headers = key()
    docs = "".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(2))

    def send(text: str) -> httpx.Response:
        return stack.client.post(
            "/v1/document_batches",
            data={"prompt": "Summarise: {document}", "model": MODEL, "max_tokens": "20"},
            files={"jsonl": ("docs.jsonl", text.encode(), "application/x-ndjson")},
            headers=headers,
        )

    first, second = send(docs), send(docs)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert count(stack, Batch) == 1
    assert send(docs + json.dumps({"id": "d9", "text": "more"}) + "\n").status_code == 409
    batch_id = first.json()["id"]
    for _ in range(300):
        if stack.client.get(f"/v1/document_batches/{batch_id}").json()["status"] == "completed":
            break
        threading.Event().wait(0.2)
    assert len(stack.emulator.calls(model=MODEL)) == 2


# ---------------------------------------------------------------- the rules


def test_a_replay_answers_even_after_the_budget_is_spent(stack: Stack, admin_stack: Stack) -> None:
    headers = key()
    first = stack.submit(job_body("before the budget changed"), **headers)
    assert first.status_code == 202
    admin_stack.client.put(f"/v1/keys/{own_id(stack)}/budget", json={"limit_usd": "0"}).raise_for_status()
    replay = stack.submit(job_body("before the budget changed"), **headers)
    assert replay.status_code == 202 and replay.json() == first.json()
    fresh = stack.submit(job_body("before the budget changed"), **key())
    assert fresh.status_code == 422 and fresh.json()["error"]["code"] == "budget_exceeded"


def test_a_refused_request_records_nothing(stack: Stack) -> None:
    headers = key()
    bad = stack.submit({"messages": [], "model": MODEL}, **headers)
    assert bad.status_code == 422
    good = stack.submit(job_body("fixed"), **headers)
    assert good.status_code == 202 and "idempotent-replayed" not in good.headers


def test_keys_are_scoped_per_api_key_and_per_route(stack: Stack) -> None:
    headers = key()
    mine = stack.submit(job_body("scoped"), **headers).json()
    other = Stack(stack.api_url, make_key("other"), stack.emulator)
    theirs = other.submit(job_body("scoped"), **headers)
    assert theirs.status_code == 202 and theirs.json()["id"] != mine["id"]
    elsewhere = stack.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "scoped"}]},
        headers=headers,
    )
    assert elsewhere.status_code == 409 and "POST /v1/jobs" in elsewhere.json()["error"]["message"]


def test_records_expire_after_24_hours_and_are_deleted(stack: Stack) -> None:
    headers = key()
    first = stack.submit(job_body("a day ago"), **headers).json()
    with transaction() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == headers["Idempotency-Key"])
            .values(created_at=utcnow() - timedelta(hours=24, seconds=1))
        )
    again = stack.submit(job_body("another request today"), **headers)  # the old record no longer counts
    assert again.status_code == 202 and again.json()["id"] != first["id"]
    stale_key = f"stale-{uuid.uuid4().hex}"
    with transaction() as session:
        session.add(
            IdempotencyRecord(
                owner_id=own_id(stack),
                key=stale_key,
                route="POST /v1/jobs",
                fingerprint="0" * 64,
                status_code=202,
                response={},
                created_at=utcnow() - timedelta(hours=25),
            )
        )
    assert idempotency.cleanup() >= 1
    with transaction() as session:
        assert session.get(IdempotencyRecord, (own_id(stack), stale_key)) is None
        assert session.get(IdempotencyRecord, (own_id(stack), headers["Idempotency-Key"])) is not None


def test_an_empty_or_long_key_is_refused(stack: Stack) -> None:
    r = stack.submit(job_body("x"), **{"Idempotency-Key": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
    r = stack.submit(job_body("x"), **{"Idempotency-Key": "k" * 256})
    assert r.status_code == 422 and r.json()["error"]["param"] == "Idempotency-Key"


# ---------------------------------------------------------------- llmqueue's own routes, by the openai SDK
# The SDK's generic `post` sends what `extra_headers` sends on its typed methods: a retry of
# /v1/jobs, /v1/embeddings/jobs and /v1/document_batches from unchanged OpenAI client code.


def sdk_post(client: openai.OpenAI, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    response: httpx.Response = client.post(
        path, cast_to=httpx.Response, options={"headers": headers}, **kwargs
    )
    return response


def wait_jobs(stack: Stack, job_ids: list[str]) -> None:
    for job_id in job_ids:
        assert stack.wait(job_id)["status"] == "succeeded"


def test_sdk_job_retry_is_one_job_one_call(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    first = sdk_post(client, "/jobs", headers, body=job_body("sdk once"))
    second = sdk_post(client, "/jobs", headers, body=job_body("sdk once"))
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    wait_jobs(stack, [first.json()["id"]])
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Job) == 1
    with pytest.raises(openai.ConflictError) as conflict:
        sdk_post(client, "/jobs", headers, body=job_body("sdk twice"))
    assert isinstance(conflict.value.body, dict) and conflict.value.body["code"] == "idempotency_conflict"
    assert count(stack, Job) == 1


def test_sdk_embedding_jobs_retry_is_the_same_jobs_one_call(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    body = {"model": "mistral-embed", "input": ["alpha", "beta"]}
    first = sdk_post(client, "/embeddings/jobs", headers, body=body)
    second = sdk_post(client, "/embeddings/jobs", headers, body=body)
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    job_ids = [j["id"] for j in first.json()["data"]]
    wait_jobs(stack, job_ids)
    embed_calls = [c for c in stack.emulator.calls() if c["kind"] == "embed"]
    assert len(embed_calls) == len(job_ids) == count(stack, Job)
    with pytest.raises(openai.ConflictError):
        sdk_post(client, "/embeddings/jobs", headers, body={**body, "input": ["alpha", "gamma"]})
    assert count(stack, Job) == len(job_ids)


def test_sdk_document_batch_retry_is_one_batch(stack: Stack, client: openai.OpenAI) -> None:
    headers = key()
    form = {"prompt": "Summarise: {document}", "model": MODEL, "max_tokens": "20"}
    docs = b'{"id": "d1", "text": "document one"}\n'

    def send(content: bytes) -> httpx.Response:
        multipart = {**headers, "Content-Type": "multipart/form-data"}  # as the SDK's files.create sets
        return sdk_post(
            client, "/document_batches", multipart, body=form, files={"jsonl": ("d.jsonl", content)}
        )

    first, second = send(docs), send(docs)
    assert first.status_code == second.status_code == 202 and first.json() == second.json()
    assert count(stack, Batch) == 1
    with pytest.raises(openai.ConflictError):
        send(docs + b'{"id": "d2", "text": "document two"}\n')
    batch_id = first.json()["id"]
    for _ in range(300):
        if stack.client.get(f"/v1/document_batches/{batch_id}").json()["status"] == "completed":
            break
        threading.Event().wait(0.2)
    assert len(stack.emulator.calls(model=MODEL)) == 1 and count(stack, Batch) == 1
