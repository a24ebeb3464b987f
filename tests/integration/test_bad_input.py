"""Bad input gets a 4xx with a JSON body saying what is wrong and where, and nothing is
stored or enqueued."""

from __future__ import annotations

import os

import httpx
import psycopg
import pytest

from tests.integration.conftest import Stack


def jobs_of(key_secret: str) -> int:
    from jobstore.jobs import hash_secret

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs j JOIN api_keys k ON k.id = j.owner_id WHERE k.key_hash = %s",
            (hash_secret(key_secret),),
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize(
    ("payload", "status", "param", "words"),
    [
        ({"messages": []}, 422, "messages", "at least 1"),
        ({}, 422, "messages", "required"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9-ultra"},
            422,
            "model",
            "gpt-9-ultra",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini", "max_tokens": 100000},
            422,
            "max_tokens",
            "16384",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0.role", "role"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 7}, 422, "temperature", "2"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "strategy": "cheapest-ever"},
            422,
            "strategy",
            "cheapest-ever",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "colour": "blue"}, 422, "colour", "Extra"),
    ],
)
def test_invalid_bodies_are_rejected_and_nothing_is_enqueued(
    stack: Stack,
    payload: dict,
    status: int,
    param: str,
    words: str,  # type: ignore[type-arg]
) -> None:
    r = stack.submit(payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert words.lower() in error["message"].lower()
    assert jobs_of(stack.key) == 0
    assert stack.emulator.calls() == []


def test_malformed_json(stack: Stack) -> None:
    r = stack.client.post("/v1/jobs", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["code"] == "invalid_json"
    assert "not valid JSON" in body["error"]["message"]
    assert jobs_of(stack.key) == 0


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer lq_wrong"}, "invalid_api_key"),
        ({"Authorization": "Token abc"}, "invalid_api_key"),
    ],
)
def test_missing_or_wrong_key(stack: Stack, headers: dict[str, str], code: str) -> None:
    r = httpx.post(
        f"{stack.api_url}/v1/jobs", json={"messages": [{"role": "user", "content": "hi"}]}, headers=headers
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"] == "Bearer"
    assert stack.emulator.calls() == []


def test_openapi_documents_the_job_routes(stack: Stack) -> None:
    spec = httpx.get(f"{stack.api_url}/openapi.json").json()
    post = spec["paths"]["/v1/jobs"]["post"]
    assert "202" in post["responses"]
    assert "Idempotency-Key".lower() in {p["name"].lower() for p in post["parameters"]}
    assert "/v1/jobs/{job_id}" in spec["paths"]
