"""The served OpenAPI document against the real stack: /docs and /openapi.json are served,
real answers conform to the schemas the document gives for them (so a generated client can
parse them), the official openai SDK still works against the routes whose docs changed, and
a missing or malformed key gets the same 401 answers as before the security scheme."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from openapi_schema_validator import OAS31Validator

from tests.integration.conftest import Stack

HELLO = [{"role": "user", "content": "Say hello to the schema"}]


@pytest.fixture
def document(stack: Stack) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(f"{stack.api_url}/openapi.json").json()
    return served


def conforms(document: dict[str, Any], instance: Any, component: str) -> None:
    """`instance` is valid against the document's `component` schema (refs resolved in it)."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    OAS31Validator(schema).validate(instance)


def answer_schema(
    document: dict[str, Any],
    path: str,
    method: str,
    status: str,
    media_type: str = "application/json",
    which: int = 0,
) -> str:
    """The component an answer is documented as; of a route answering one of several shapes
    (`anyOf`), the one at `which`."""
    schema = document["paths"][path][method]["responses"][status]["content"][media_type]["schema"]
    ref: str = schema["$ref"] if "$ref" in schema else schema["anyOf"][which]["$ref"]
    return ref.rsplit("/", 1)[1]


def test_docs_page_and_document_are_served(stack: Stack, document: dict[str, Any]) -> None:
    page = httpx.get(f"{stack.api_url}/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text and "/openapi.json" in page.text
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_answers_conform_to_their_documented_schemas(stack: Stack, document: dict[str, Any]) -> None:
    accepted = stack.submit({"messages": HELLO, "model": "gpt-4o-mini"})
    conforms(document, accepted.json(), answer_schema(document, "/v1/jobs", "post", "202"))
    job = stack.wait(accepted.json()["id"])
    conforms(document, job, answer_schema(document, "/v1/jobs/{job_id}", "get", "200"))
    assert job["total_latency_ms"] >= job["latency_ms"] > 0

    listing = stack.client.get("/v1/jobs", params={"limit": 2}).json()
    conforms(document, listing, answer_schema(document, "/v1/jobs", "get", "200"))
    completion = stack.client.post("/v1/chat/completions", json={"model": "cost", "messages": HELLO})
    assert completion.status_code == 200, completion.text
    conforms(document, completion.json(), answer_schema(document, "/v1/chat/completions", "post", "200"))
    health = httpx.get(f"{stack.api_url}/healthz").json()
    conforms(document, health, answer_schema(document, "/healthz", "get", "200"))


def test_document_results_conform(stack: Stack, document: dict[str, Any]) -> None:
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini"},
        files=[("files", ("otters.txt", b"Otters hold hands while they sleep.", "text/plain"))],
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while stack.client.get(f"/v1/document_batches/{batch_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    path = "/v1/document_batches/{batch_id}/results"
    lines = stack.client.get(f"/v1/document_batches/{batch_id}/results").text.splitlines()
    assert len(lines) == 1
    conforms(
        document, json.loads(lines[0]), answer_schema(document, path, "get", "200", "application/x-ndjson")
    )
    detail = stack.client.get(f"/v1/document_batches/{batch_id}/documents/otters.txt")
    assert detail.status_code == 200, detail.text
    conforms(
        document,
        detail.json(),
        answer_schema(document, "/v1/document_batches/{batch_id}/documents/{doc_id}", "get", "200"),
    )


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({}, "missing_api_key", 401),
        ({"Authorization": "Token abc"}, "invalid_api_key", 401),
        ({"Authorization": "Bearer"}, "invalid_api_key", 401),
        ({"Authorization": "Bearer lq_not_a_key"}, "invalid_api_key", 401),
    ],
)
def test_key_errors_are_unchanged(
    stack: Stack, document: dict[str, Any], headers: dict[str, str], code: str, status: int
) -> None:
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        r = httpx.request(method, f"{stack.api_url}{path}", headers=headers, json={})
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["code"] == code and r.json()["error"]["param"] == "Authorization"
        assert r.headers["www-authenticate"] == "Bearer"
        conforms(document, r.json(), "ErrorResponse")


def test_a_validation_error_is_the_documented_error_shape(stack: Stack, document: dict[str, Any]) -> None:
    r = stack.submit({"messages": HELLO, "max_tokens": 0})
    assert r.status_code == 422
    conforms(document, r.json(), answer_schema(document, "/v1/jobs", "post", "422"))


def test_the_openai_sdk_still_works_against_the_documented_routes(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=30)
    assert reply.object == "chat.completion" and reply.choices[0].message.content
    chunks = list(client.chat.completions.create(model="cost", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert any(m.id == "gpt-4o-mini" for m in client.models.list())
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.api_url + "/v1", api_key="lq_wrong", max_retries=0).models.list()


def test_embedding_answers_conform(stack: Stack, document: dict[str, Any]) -> None:
    """Issue 14's routes: an embeddings answer, an embedding job with its vectors, an embed-mode
    batch's chunk rows (the second shape of /results) and its documents."""
    answer = stack.client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b"]}
    )
    assert answer.status_code == 200, answer.text
    conforms(document, answer.json(), answer_schema(document, "/v1/embeddings", "post", "200"))
    job = stack.job(answer.json()["llmqueue"]["job_ids"][0])
    assert len(job["embeddings"]) == 2
    conforms(document, job, answer_schema(document, "/v1/jobs/{job_id}", "get", "200"))
    r = stack.client.post(
        "/v1/document_batches",
        data={"mode": "embed", "model": "text-embedding-3-small", "chunk_tokens": "8", "dimensions": "4"},
        files=[("files", ("otters.txt", b"Otters hold hands while they sleep, and drift.", "text/plain"))],
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while stack.client.get(f"/v1/document_batches/{batch_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    rows = stack.client.get(f"/v1/document_batches/{batch_id}/results", params={"include_text": "true"})
    path = "/v1/document_batches/{batch_id}/results"
    chunk_row = answer_schema(document, path, "get", "200", "application/x-ndjson", which=1)
    assert chunk_row == "ChunkRow"
    for line in rows.text.splitlines():
        conforms(document, json.loads(line), chunk_row)
    listing = stack.client.get(f"/v1/document_batches/{batch_id}/documents").text.splitlines()
    docs_path = "/v1/document_batches/{batch_id}/documents"
    for line in listing:
        conforms(
            document,
            json.loads(line),
            answer_schema(document, docs_path, "get", "200", "application/x-ndjson"),
        )
    one = stack.client.get(f"/v1/document_batches/{batch_id}/documents/otters.txt").json()
    doc_path = "/v1/document_batches/{batch_id}/documents/{doc_id}"
    conforms(document, one, answer_schema(document, doc_path, "get", "200", which=1))
