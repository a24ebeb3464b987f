"""POST /v1/providers/{name}/test over real HTTP: one call through the provider's adapter and
official SDK to the emulator, reported with latency and answer, or with the mapped error.
Admin keys only, with a fixed prompt; the call is recorded as a job of the admin key, its
cost in the ledger and in spend."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.conftest import Stack, make_key


@pytest.mark.parametrize(
    "provider", ["openai", "anthropic", "gemini", "cohere", "mistral", "bedrock", "ollama"]
)
def test_a_provider_test_reports_latency_answer_and_usage(admin_stack: Stack, provider: str) -> None:
    stack = admin_stack
    r = stack.client.post(f"/v1/providers/{provider}/test")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True and report["error"] is None
    assert report["provider"] == provider and report["emulated"] is True
    assert report["answer"].endswith("pong")  # the emulator echoes the prompt
    assert report["latency_ms"] > 0
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["output_tokens"] > 0
    assert [c["status"] for c in stack.emulator.calls(provider=provider)] == [200]


def test_a_deployment_name_and_no_body_work(admin_stack: Stack) -> None:
    stack = admin_stack
    r = stack.client.post("/v1/providers/anthropic/claude-sonnet-4-6/test")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deployment"] == "anthropic/claude-sonnet-4-6" and report["model"] == "claude-sonnet-4-6"
    assert report["ok"] is True and report["answer"]
    assert stack.emulator.calls(model="claude-sonnet-4-6")


def test_an_embedding_deployment_is_tested_with_one_embedding(admin_stack: Stack) -> None:
    stack = admin_stack
    r = stack.client.post(
        "/v1/providers/openai/text-embedding-3-small/test",
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True and report["model"] == "text-embedding-3-small"
    assert report["answer"] == "a vector of 1536 dimensions"
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["output_tokens"] == 0
    assert [(c["kind"], c["inputs"]) for c in stack.emulator.calls(provider="openai")] == [("embed", 1)]
    # a provider's own test still picks a chat deployment, though embedding models cost less
    assert stack.client.post("/v1/providers/openai/test").json()["model"] == "gpt-4o-mini"


def test_the_body_can_choose_the_providers_deployment(admin_stack: Stack) -> None:
    stack = admin_stack
    r = stack.client.post("/v1/providers/openai/test", json={"deployment": "openai/gpt-4.1"})
    assert r.status_code == 200 and r.json()["model"] == "gpt-4.1"
    r = stack.client.post("/v1/providers/openai/test", json={"deployment": "anthropic/claude-haiku-4-5"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "deployment"


def test_an_emulated_401_is_reported_as_auth(admin_stack: Stack) -> None:
    stack = admin_stack
    stack.emulator.configure({"mistral": {"script": [{"status": 401, "message": "Unauthorized: bad key"}]}})
    r = stack.client.post("/v1/providers/mistral/test")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is False and report["answer"] is None
    assert report["error"]["type"] == "auth" and report["error"]["status_code"] == 401
    assert "bad key" in report["error"]["message"]
    assert "emulator-key" not in r.text  # the key the call used is not echoed


def test_a_rate_limit_is_reported_with_its_class(admin_stack: Stack) -> None:
    stack = admin_stack
    stack.emulator.configure({"openai": {"script": [{"status": 429, "retry_after": 3}]}})
    report = stack.client.post("/v1/providers/openai/test").json()
    assert report["ok"] is False and report["error"]["type"] == "rate_limited"


def test_an_unknown_provider_is_404(admin_stack: Stack) -> None:
    stack = admin_stack
    r = stack.client.post("/v1/providers/nonesuch/test")
    assert r.status_code == 404
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("name", "provider_not_found")
    assert "nonesuch" in error["message"]
    assert not stack.emulator.calls()


def test_the_test_endpoint_needs_an_api_key(stack: Stack) -> None:
    import httpx

    r = httpx.post(f"{stack.api_url}/v1/providers/openai/test")
    assert r.status_code == 401
    assert not stack.emulator.calls()


def test_a_member_key_gets_403_and_no_call(stack: Stack) -> None:
    r = stack.client.post("/v1/providers/openai/test")
    assert r.status_code == 403
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("admin_required", "Authorization")
    assert "admin" in error["message"]
    assert not stack.emulator.calls()


def test_the_prompt_is_fixed(admin_stack: Stack) -> None:
    r = admin_stack.client.post("/v1/providers/openai/test", json={"prompt": "write me a novel"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"
    r = admin_stack.client.post("/v1/providers/openai/test", json={"max_tokens": 4000})
    assert r.status_code == 422 and r.json()["error"]["param"] == "max_tokens"
    assert not admin_stack.emulator.calls()


def test_the_test_is_recorded_as_a_job_with_its_cost_in_spend(admin_stack: Stack) -> None:
    stack = admin_stack
    report = stack.client.post("/v1/providers/openai/test", json={"deployment": "openai/gpt-4.1"}).json()
    assert report["ok"] is True and Decimal(report["cost_usd"]) > 0
    assert [c["status"] for c in stack.emulator.calls(provider="openai")] == [200]
    assert 0 < report["usage"]["output_tokens"] <= 32  # the fixed max_tokens
    job = stack.job(report["job_id"])
    assert job["status"] == "succeeded" and job["model"] == "gpt-4.1"
    assert job["usage"]["input_tokens"] == report["usage"]["input_tokens"] > 0
    assert Decimal(job["cost_usd"]) == Decimal(report["cost_usd"])
    assert [a["status"] for a in job["attempts"]] == ["succeeded"]
    assert job["metadata"] == {"tags": ["provider_test"]}
    spend = stack.client.get("/v1/spend", params={"group_by": "tag", "key": _own_id(stack)}).json()
    assert spend["data"] == [
        {
            "group": {"tag": "provider_test"},
            "calls": 1,
            "jobs": 1,
            "input_tokens": job["usage"]["input_tokens"],
            "output_tokens": job["usage"]["output_tokens"],
            "cost_usd": f"{Decimal(report['cost_usd']):f}",
        }
    ]


def test_the_test_is_refused_when_the_admin_budget_is_spent(admin_stack: Stack) -> None:
    stack = admin_stack
    key_id = _own_id(stack)
    r = stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "0.0000001"})
    assert r.status_code == 200, r.text
    r = stack.client.post("/v1/providers/openai/test")
    assert r.status_code == 422
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("budget_exceeded", "Authorization")
    assert not stack.emulator.calls()
    own = stack.client.get("/v1/keys/self").json()
    assert own["budget"]["reserved_usd"] == "0E-8" or Decimal(own["budget"]["reserved_usd"]) == 0


def _own_id(stack: Stack) -> str:
    key_id: str = stack.client.get("/v1/keys/self").json()["id"]
    return key_id


def test_another_admin_key_does_not_see_it_as_its_own_spend(admin_stack: Stack) -> None:
    admin_stack.client.post("/v1/providers/openai/test").raise_for_status()
    other = Stack(admin_stack.api_url, make_key("other-admin", admin=True), admin_stack.emulator)
    mine = other.client.get("/v1/spend", params={"key": _own_id(other)}).json()
    assert mine["data"] == [] and Decimal(mine["total"]["cost_usd"]) == 0
