"""The OpenAPI document (`api/openapi.py`) is one a client generator can use: it validates as
OpenAPI 3.1, declares bearer security once and on every route under /v1, has a request
schema wherever a route takes a body and a 2xx response schema on every route, documents
errors in the one error shape, and carries examples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from api.main import create_app

DOCUMENT: dict[str, Any] = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]
IDS = [f"{method} {path}" for method, path, _ in OPERATIONS]
SCHEMAS = DOCUMENT["components"]["schemas"]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The component a schema refers to; an optional one (`anyOf: [ref, null]`) counts."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema = options[0]
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    assert name in SCHEMAS, f"{ref} points at no component"
    resolved: dict[str, Any] = SCHEMAS[name]
    return resolved


def test_the_document_validates_as_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


def test_every_reference_resolves() -> None:
    text = json.dumps(DOCUMENT)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in SCHEMAS, name


def test_bearer_security_is_declared_once() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "llmqueue API key",
            "description": schemes["bearerAuth"]["description"],
        }
    }
    assert "llmqueue keys create" in schemes["bearerAuth"]["description"]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_v1_route_declares_the_bearer_security(
    method: str, path: str, operation: dict[str, Any]
) -> None:
    if not path.startswith("/v1/"):
        assert "security" not in operation  # /healthz is open
        return
    assert operation["security"] == [{"bearerAuth": []}]
    headers = [p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"]
    assert "authorization" not in headers, "the key is the security scheme's, not a header parameter"
    unauthorized = operation["responses"]["401"]["content"]["application/json"]["schema"]
    assert unauthorized == {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_route_has_a_2xx_response_schema(method: str, path: str, operation: dict[str, Any]) -> None:
    successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
    assert successes, "no 2xx response"
    for code, response in successes.items():
        content = response.get("content")
        assert content, f"{code} has no content"
        for media_type, body in content.items():
            schema = body.get("schema")
            assert schema, f"{code} {media_type} has no schema"
            resolved = resolve(schema)
            alternatives = resolved.get("anyOf") or resolved.get("oneOf") or [resolved]
            for alternative in alternatives:  # one shape, or one per caller (an admin's, a member's)
                shape = resolve(alternative)
                assert shape.get("type") or shape.get("properties"), (code, media_type)


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=IDS)
def test_every_error_answer_is_the_one_error_shape(method: str, path: str, operation: dict[str, Any]) -> None:
    for code, response in operation["responses"].items():
        if (path, code) == ("/healthz", "503"):
            continue  # the health report itself, naming the dependency that is down
        if code[0] in "45":
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, code
    assert "HTTPValidationError" not in SCHEMAS  # FastAPI's shape, which the API never answers


@pytest.mark.parametrize(("path", "operation"), [(p, o) for m, p, o in OPERATIONS if m == "POST"])
def test_every_post_documents_its_body(path: str, operation: dict[str, Any]) -> None:
    if path.endswith(("/cancel", "/revoke")):
        assert "requestBody" not in operation  # an action on what the path names takes no body
        return
    body = operation["requestBody"]["content"]
    (media_type, described), *_ = body.items()
    assert resolve(described["schema"]).get("properties"), (path, media_type)


def test_chat_completions_documents_openais_body_and_answers() -> None:
    operation = DOCUMENT["paths"]["/v1/chat/completions"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionCreate"
    }
    create = SCHEMAS["ChatCompletionCreate"]
    assert {"model", "messages", "stream", "max_tokens", "tools"} <= set(create["properties"])
    assert create["required"] == ["model", "messages"]
    answers = operation["responses"]["200"]["content"]
    assert answers["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert "chat.completion.chunk" in answers["text/event-stream"]["schema"]["description"]


def test_request_bodies_and_errors_carry_examples() -> None:
    for name in ("JobCreate", "ChatCompletionCreate", "BatchCreate", "ErrorResponse", "ChatCompletion"):
        assert SCHEMAS[name].get("examples"), name


def test_a_jobs_two_latencies_are_documented() -> None:
    job = SCHEMAS["JobPublic"]["properties"]
    assert "answered" in job["latency_ms"]["description"]
    assert "created_at" in job["total_latency_ms"]["description"]
    assert "finished_at" in job["total_latency_ms"]["description"]
