"""Budgets at intake on every creating route (OpenAI-style batches included), a batch's own
`max_cost_usd` stored as its budget, and what a member sees of provider health."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from jobstore.db import transaction
from jobstore.models import Budget, Job
from tests.integration.conftest import Stack
from tests.integration.test_openai_compat import request_line, wait_batch

MODEL = "gpt-4o-mini"


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def input_file(client: openai.OpenAI, lines: int = 2) -> str:
    content = "".join(json.dumps(request_line(f"r{i}", f"line {i}")) + "\n" for i in range(lines)).encode()
    return client.files.create(file=("in.jsonl", io.BytesIO(content)), purpose="batch").id


def document_batch(stack: Stack, **form: str) -> Any:
    return stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": MODEL, "max_tokens": "20", **form},
        files={"jsonl": ("docs.jsonl", b'{"id": "a", "text": "alpha"}\n', "application/x-ndjson")},
    )


def batch_budget(batch_id: str) -> Budget | None:
    with transaction() as session:
        found = session.scalar(select(Budget).where(Budget.batch_id == batch_id))
        if found is not None:
            session.expunge(found)
        return found


def jobs_of(key_id: str) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == key_id)) or 0


def test_a_spent_budget_is_refused_on_every_creating_route(
    stack: Stack, admin_stack: Stack, client: openai.OpenAI
) -> None:
    file_id = input_file(client)  # before the budget is spent: an upload spends nothing anyway
    key_id = stack.client.get("/v1/keys/self").json()["id"]
    jobs_before = jobs_of(key_id)
    admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "0"}).raise_for_status()

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    error: Any = refused.value.body
    assert (error["code"], error["param"]) == ("budget_exceeded", "Authorization")
    assert "set-budget" in error["message"]

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "budget_exceeded"

    for r in (
        document_batch(stack),
        stack.submit({"messages": [{"role": "user", "content": "hi"}], "model": MODEL}),
    ):
        assert r.status_code == 422 and r.json()["error"]["code"] == "budget_exceeded", r.text
    assert client.files.create(file=("more.jsonl", io.BytesIO(b"{}\n")), purpose="batch").id
    # Nothing refused was stored, so nothing can reach a provider. (Not the emulator's call log:
    # a call an earlier test left in flight or in a retry's backoff may land in it.)
    assert jobs_of(key_id) == jobs_before


def test_an_openai_batch_takes_max_cost_usd_through_extra_body(client: openai.OpenAI) -> None:
    batch = client.batches.create(
        input_file_id=input_file(client),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"max_cost_usd": "0.25"},
    )
    assert (batch.model_extra or {})["max_cost_usd"] == "0.25"
    assert client.batches.retrieve(batch.id).model_extra == batch.model_extra
    budget = batch_budget(batch.id)
    assert budget is not None and budget.limit_usd == Decimal("0.25") and budget.period == "lifetime"
    plain = client.batches.create(
        input_file_id=input_file(client), endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch_budget(plain.id) is None and (plain.model_extra or {}).get("max_cost_usd") is None
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.batches.create(
            input_file_id=input_file(client),
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"max_cost_usd": 0},
        )
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "max_cost_usd"
    for made in (batch, plain):  # let their calls end here, not in the next test's call log
        assert wait_batch(client, made.id).status == "completed"


def test_a_document_batch_takes_max_cost_usd_as_a_form_field(stack: Stack) -> None:
    r = document_batch(stack, max_cost_usd="1.5")
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["options"]["max_cost_usd"] == "1.5"
    budget = batch_budget(created["id"])
    assert budget is not None and budget.limit_usd == Decimal("1.5")
    for _ in range(300):  # let its call end here, not in the next test's call log
        if stack.client.get(f"/v1/document_batches/{created['id']}").json()["status"] == "completed":
            break
        time.sleep(0.2)
    r = document_batch(stack, max_cost_usd="0")
    assert r.status_code == 422 and r.json()["error"]["param"] == "max_cost_usd"
    # The per-document routing ceiling keeps its own name, and its own errors.
    r = document_batch(stack, max_cost_per_document_usd="0.000000001")
    assert r.status_code == 422 and r.json()["error"]["param"] == "max_cost_per_document_usd", r.text


def test_a_member_sees_provider_status_not_operator_detail(stack: Stack, admin_stack: Stack) -> None:
    member = stack.client.get("/v1/providers")
    assert member.status_code == 200
    body = member.json()
    assert body["view"] == "member"
    openai_view = next(p for p in body["data"] if p["provider"] == "openai")
    assert openai_view["status"] in ("healthy", "degraded", "down")
    assert {m["model"] for m in openai_view["models"]} >= {"gpt-4o-mini", "gpt-4.1"}
    assert all(set(m) == {"model", "available", "back_at"} for m in openai_view["models"])
    for operator_field in (
        "deployments",
        "error_rate",
        "samples",
        "latency",
        "traffic_share",
        "base_url",
        "http",
    ):
        assert operator_field not in member.text, operator_field
    admin = admin_stack.client.get("/v1/providers").json()
    assert admin["view"] == "admin"
    assert "deployments" in next(p for p in admin["data"] if p["provider"] == "openai")
