"""The routing endpoints on the real stack: /v1/models (through the openai SDK too),
/v1/providers, /v1/stats, /v1/route/preview, and the explanation every job stores."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import openai
import redis

from llmqueue.client import Client
from routing.breaker import HealthState
from routing.catalog import ModelKind, get_catalog
from tests.integration.conftest import Stack, make_key
from workers.health import HealthStore


def body(text: str, **routing: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **routing}


def chat_deployments() -> set[str]:
    return {d.name for d in get_catalog().deployments_of_kind(ModelKind.CHAT)}


def test_models_list_works_through_the_openai_sdk(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=stack.key, max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == set(get_catalog().models)
    mini = models["gpt-4o-mini"]
    assert mini.owned_by == "openai" and mini.object == "model" and isinstance(mini.created, int)
    extra = mini.model_dump()
    assert extra["input_price_per_million"] == "0.15" and extra["output_price_per_million"] == "0.60"
    assert extra["context_window"] == 128000 and "tools" in extra["capabilities"]
    assert extra["deployments"][0]["name"] == "openai/gpt-4o-mini"


def test_embedding_models_are_listed_with_their_fields(stack: Stack) -> None:
    r = stack.client.get("/v1/models", params={"kind": "embedding", "provider": "openai"})
    assert r.status_code == 200, r.text
    listed = {m["id"]: m for m in r.json()["data"]}
    assert set(listed) == {"text-embedding-3-small", "text-embedding-3-large"}
    small = listed["text-embedding-3-small"]
    assert (
        small["kind"] == "embedding" and small["dimensions"] == 1536 and small["dimension_options"] == "any"
    )
    assert small["max_input_tokens"] == 8191 and small["max_inputs_per_call"] == 2048
    assert small["max_tokens_per_call"] == 300000
    assert small["input_price_per_million"] == "0.02" and small["output_price_per_million"] == "0"
    assert small["deployments"][0]["name"] == "openai/text-embedding-3-small"
    titan = stack.client.get("/v1/models/amazon.titan-embed-text-v2:0").json()
    assert titan["dimension_options"] == [256, 512] and titan["max_inputs_per_call"] == 1
    assert len(titan["deployments"]) == 2
    chat = stack.client.get("/v1/models", params={"kind": "chat"}).json()["data"]
    assert {m["kind"] for m in chat} == {"chat"} and "gpt-4o-mini" in {m["id"] for m in chat}
    assert all(m["dimensions"] is None and m["max_inputs_per_call"] is None for m in chat)
    bad = stack.client.get("/v1/models", params={"kind": "rerank"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "kind"


def test_models_filters_and_errors(stack: Stack) -> None:
    r = stack.client.get(
        "/v1/models", params={"capability": "json_schema", "provider": "gemini", "tag": "cheap"}
    )
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["gemini-2.5-flash-lite"]
    no_vision = stack.client.get("/v1/models", params={"capability": "vision"}).json()["data"]
    assert "claude-haiku-4-5" in {m["id"] for m in no_vision}
    assert "command-a-03-2025" not in {m["id"] for m in no_vision}
    for param, value in (("capability", "telepathy"), ("provider", "skynet")):
        bad = stack.client.get("/v1/models", params={param: value})
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == param and value in bad.json()["error"]["message"]
    one = stack.client.get("/v1/models/azure/gpt-4o-mini")
    assert one.status_code == 200 and one.json()["provider"] == "azure"
    missing = stack.client.get("/v1/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert stack.client.get("/v1/models", headers={"Authorization": ""}).status_code == 401


def test_providers_show_health_learned_from_calls(stack: Stack, admin_stack: Stack) -> None:
    job = stack.wait(stack.submit(body("health check", model="claude-haiku-4-5")).json()["id"])
    assert job["status"] == "succeeded"
    r = admin_stack.client.get("/v1/providers")
    assert r.status_code == 200
    providers = {p["provider"]: p for p in r.json()["data"]}
    assert set(providers) == set(get_catalog().providers())
    haiku = next(
        d for d in providers["anthropic"]["deployments"] if d["deployment"] == "anthropic/claude-haiku-4-5"
    )
    assert haiku["breaker"] == "closed" and haiku["accepting"] is True
    assert (
        haiku["samples"] >= 1 and haiku["latency_ewma_ms"] is not None and haiku["latency_p95_ms"] is not None
    )


def test_open_breaker_shows_in_providers_and_preview(stack: Stack, admin_stack: Stack) -> None:
    """Trip a deployment's breaker in the real Redis store the workers share; the API sees it."""
    store = HealthStore(
        redis.Redis.from_url(os.environ["REDIS_URL"]), prefix=os.environ["LLMQUEUE_REDIS_PREFIX"]
    )
    name = "mistral/mistral-small"
    now = datetime.now(UTC).timestamp()
    try:
        for _ in range(5):
            store.record_failure(name, now)
        mistral = next(
            p for p in admin_stack.client.get("/v1/providers").json()["data"] if p["provider"] == "mistral"
        )
        small = next(d for d in mistral["deployments"] if d["deployment"] == name)
        assert small["breaker"] == "open" and small["accepting"] is False
        assert small["consecutive_failures"] == 5 and small["error_rate"] == 1.0
        assert datetime.fromisoformat(small["cooldown_until"]) > datetime.now(UTC)
        assert mistral["status"] == "degraded"
        preview = stack.client.post(
            "/v1/route/preview", json=body("x", model=name, fallbacks=["gpt-4o-mini"])
        )
        assert preview.status_code == 200, preview.text
        data = preview.json()
        assert data["chosen"]["deployment"] == "openai/gpt-4o-mini"
        assert [(e["deployment"], e["filter"]) for e in data["excluded"]] == [(name, "breaker")]
    finally:
        store.redis.delete(store.key(name))
        assert store.state(name) == HealthState()


def test_route_preview_ranks_without_enqueuing(stack: Stack) -> None:
    r = stack.client.post("/v1/route/preview", json=body("rank me", strategy="cost", min_quality=85))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["strategy"] == "cost"
    ranked = [c["model"] for c in data["candidates"]]
    assert set(ranked) == {"claude-sonnet-4-6", "gemini-2.5-pro"}
    costs = [Decimal(c["estimated_cost_usd"]) for c in data["candidates"]]
    assert costs == sorted(costs) and data["chosen"] == data["candidates"][0]
    assert all(e["filter"] == "quality" and "min_quality 85" in e["reason"] for e in data["excluded"])
    assert len(data["excluded"]) == len(chat_deployments()) - 2  # embedding models are not candidates
    with Client(base_url=stack.api_url, api_key=stack.key) as client:  # the Python client's way in
        same = client.route_preview("rank me", strategy="cost", min_quality=85)
    assert [c["model"] for c in same["candidates"]] == ranked
    assert stack.client.get("/v1/jobs").json()["data"] == []  # nothing was enqueued


def test_route_preview_rejects_what_submission_rejects(stack: Stack) -> None:
    for bad in (
        body("x", strategy="fastest-please"),
        body("x", model="gpt-9"),
        body("x", min_quality=101),
        body("x", min_quality=99),
    ):
        preview = stack.client.post("/v1/route/preview", json=bad)
        submitted = stack.submit(bad)
        assert preview.status_code == submitted.status_code == 422
        assert preview.json() == submitted.json()


def test_every_job_stores_its_explanation(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    job = stack.wait(
        stack.submit({**body("explain", strategy="balanced", min_quality=70), "tools": tools}).json()["id"]
    )
    assert job["status"] == "succeeded"
    explanation = job["explanation"]
    assert explanation["strategy"] == "balanced"
    top = explanation["candidates"][0]
    assert top["deployment"] == job["deployment"]
    assert all(c["score"] <= top["score"] and "x cost" in c["detail"] for c in explanation["candidates"])
    reasons = {e["deployment"]: e["reason"] for e in explanation["excluded"]}
    assert reasons["openai/gpt-4o-mini"] == "quality: 62 < min_quality 70"
    assert reasons["ollama/llama3.2"].startswith("quality: 40")
    listed = {c["deployment"] for c in explanation["candidates"]} | set(reasons)
    assert listed == chat_deployments()


def test_unservable_request_is_422_naming_each_exclusion(stack: Stack) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    r = stack.submit({**body("impossible", min_quality=89, max_tokens=4500), "response_format": schema})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "no_route" and error["message"].startswith("no deployment can serve this request")
    by_deployment = {d["deployment"]: d for d in error["details"]}
    assert set(by_deployment) == chat_deployments()
    sonnet = by_deployment["anthropic/claude-sonnet-4-6"]  # quality 90, but no json_schema
    assert sonnet["filter"] == "capabilities" and sonnet["reason"].endswith("model lacks json_schema")
    assert (
        by_deployment["cohere/command-r7b"]["reason"]
        == "max_output: 4500 max_tokens > 4000 max output tokens"
    )
    assert by_deployment["gemini/gemini-2.5-pro"]["reason"] == "quality: 88 < min_quality 89"
    for d in error["details"]:
        assert d["deployment"] in error["message"] and d["reason"] in error["message"]


def test_stats_aggregate_this_keys_jobs(stack: Stack) -> None:
    mine = Stack(stack.api_url, make_key("stats"), stack.emulator)
    ids = [mine.submit(body(f"count me {i}", model="gpt-4o-mini")).json()["id"] for i in range(3)]
    ids.append(mine.submit(body("and me", model="claude-haiku-4-5")).json()["id"])
    jobs = [mine.wait(i) for i in ids]
    assert all(j["status"] == "succeeded" for j in jobs)
    stats = mine.client.get("/v1/stats").json()
    assert stats["jobs_by_status"] == {"succeeded": 4}
    spend = sum(Decimal(j["cost_usd"]) for j in jobs)
    assert Decimal(stats["total"]["cost_usd"]) == spend and stats["total"]["jobs"] == 4
    by_model = {g["key"]: g for g in stats["by_model"]}
    assert by_model["gpt-4o-mini"]["jobs"] == 3 and by_model["claude-haiku-4-5"]["jobs"] == 1
    assert Decimal(by_model["gpt-4o-mini"]["cost_usd"]) == sum(Decimal(j["cost_usd"]) for j in jobs[:3])
    assert by_model["gpt-4o-mini"]["input_tokens"] == sum(j["usage"]["input_tokens"] for j in jobs[:3])
    assert {g["key"]: g["jobs"] for g in stats["by_provider"]} == {"anthropic": 1, "openai": 3}
    assert [(g["key"], g["jobs"]) for g in stats["by_day"]] == [(jobs[0]["created_at"][:10], 4)]
    latencies = sorted(j["latency_ms"] for j in jobs)
    latency = stats["latency"]
    assert latency["jobs"] == 4 and latency["method"] == "percentile_cont"
    assert latencies[0] <= latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latencies[-1]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    later = mine.client.get("/v1/stats", params={"since": tomorrow}).json()
    assert (
        later["jobs_by_status"] == {}
        and later["total"]["cost_usd"] == "0"
        and later["latency"]["p50_ms"] is None
    )
    bad = mine.client.get("/v1/stats", params={"since": "last tuesday"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "since"


def test_a_job_is_counted_once_at_submission_and_routed_on_that_count(stack: Stack) -> None:
    """The API stores the request's token count; routing (in the dispatcher, and in a provider
    worker on failover) calibrates it per provider instead of tokenizing again."""
    from sqlalchemy import select

    from core.types import ChatRequest
    from jobstore.db import transaction
    from jobstore.models import Job
    from routing.tokens import calibrate, count_request_tokens, raw_request_tokens

    text = "Count me once: " + "the quick brown fox jumps over the lazy dog. " * 40
    job = stack.wait(stack.submit(body(text, strategy="quality")).json()["id"])
    with transaction() as session:
        stored = session.scalar(select(Job.request_tokens).where(Job.id == job["id"]))
    request = ChatRequest(messages=[{"role": "user", "content": text}])
    assert stored == raw_request_tokens(request) > 400
    for candidate in job["explanation"]["candidates"]:
        provider = candidate["provider"]
        assert candidate["input_tokens"] == calibrate(stored, provider)
        assert candidate["input_tokens"] == count_request_tokens(request, provider)
