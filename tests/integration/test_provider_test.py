"""POST /v1/providers/{name}/test over real HTTP: one call through the provider's adapter and
official SDK to the emulator, reported with latency and answer, or with the mapped error."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Stack


@pytest.mark.parametrize(
    "provider", ["openai", "anthropic", "gemini", "cohere", "mistral", "bedrock", "ollama"]
)
def test_a_provider_test_reports_latency_answer_and_usage(stack: Stack, provider: str) -> None:
    r = stack.client.post(f"/v1/providers/{provider}/test", json={"prompt": "pong"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True and report["error"] is None
    assert report["provider"] == provider and report["emulated"] is True
    assert report["answer"].endswith("pong")  # the emulator echoes the prompt
    assert report["latency_ms"] > 0
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["output_tokens"] > 0
    assert [c["status"] for c in stack.emulator.calls(provider=provider)] == [200]


def test_a_deployment_name_and_no_body_work(stack: Stack) -> None:
    r = stack.client.post("/v1/providers/anthropic/claude-sonnet-4-6/test")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deployment"] == "anthropic/claude-sonnet-4-6" and report["model"] == "claude-sonnet-4-6"
    assert report["ok"] is True and report["answer"]
    assert stack.emulator.calls(model="claude-sonnet-4-6")


def test_an_embedding_deployment_is_tested_with_one_embedding(stack: Stack) -> None:
    r = stack.client.post("/v1/providers/openai/text-embedding-3-small/test", json={"prompt": "pong"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True and report["model"] == "text-embedding-3-small"
    assert report["answer"] == "a vector of 1536 dimensions"
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["output_tokens"] == 0
    assert [(c["kind"], c["inputs"]) for c in stack.emulator.calls(provider="openai")] == [("embed", 1)]
    # a provider's own test still picks a chat deployment, though embedding models cost less
    assert stack.client.post("/v1/providers/openai/test").json()["model"] == "gpt-4o-mini"


def test_the_body_can_choose_the_providers_deployment(stack: Stack) -> None:
    r = stack.client.post("/v1/providers/openai/test", json={"deployment": "openai/gpt-4.1"})
    assert r.status_code == 200 and r.json()["model"] == "gpt-4.1"
    r = stack.client.post("/v1/providers/openai/test", json={"deployment": "anthropic/claude-haiku-4-5"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "deployment"


def test_an_emulated_401_is_reported_as_auth(stack: Stack) -> None:
    stack.emulator.configure({"mistral": {"script": [{"status": 401, "message": "Unauthorized: bad key"}]}})
    r = stack.client.post("/v1/providers/mistral/test")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is False and report["answer"] is None
    assert report["error"]["type"] == "auth" and report["error"]["status_code"] == 401
    assert "bad key" in report["error"]["message"]
    assert "emulator-key" not in r.text  # the key the call used is not echoed


def test_a_rate_limit_is_reported_with_its_class(stack: Stack) -> None:
    stack.emulator.configure({"openai": {"script": [{"status": 429, "retry_after": 3}]}})
    report = stack.client.post("/v1/providers/openai/test").json()
    assert report["ok"] is False and report["error"]["type"] == "rate_limited"


def test_an_unknown_provider_is_404(stack: Stack) -> None:
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
