"""Every seed provider end to end: HTTP API, dispatcher, that provider's Celery queue, a
worker process, the provider's official SDK against the emulator over HTTP, and the result,
usage and cost in Postgres (cost = reported usage x catalog price, exactly, in Decimal).

The session worker does not consume provider.azure (the crash test owns it), so this module
runs its own worker for that queue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from routing.catalog import get_catalog
from routing.costs import MILLION, QUANTUM
from tests.integration.conftest import Stack, WorkerProcess

# provider -> the catalog model a job asks for
MODEL_FOR = {
    "openai": "gpt-4o-mini",
    "azure": "azure/gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash-lite",
    "cohere": "command-r7b-12-2024",
    "mistral": "mistral-small-latest",
    "bedrock": "amazon.nova-lite-v1:0",
    "ollama": "llama3.2",
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def azure_worker(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(queues="provider.azure", concurrency=4).start()
    yield proc
    proc.stop()


def expected_cost(model_id: str, usage: dict[str, int]) -> Decimal:
    model = get_catalog().model(model_id)
    assert model is not None
    cached = usage["cached_input_tokens"]
    cached_price = model.cached_input_price if model.cached_input_price is not None else model.input_price
    raw = (
        Decimal(usage["input_tokens"] - cached) * model.input_price
        + Decimal(cached) * cached_price
        + Decimal(usage["output_tokens"]) * model.output_price
    ) / MILLION
    return raw.quantize(QUANTUM)


def db_rows(job_id: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        job = conn.execute(
            "SELECT status, provider, model, result_text, input_tokens, output_tokens, cost_usd "
            "FROM jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
        attempts = conn.execute(
            "SELECT status, provider, deployment, input_tokens, output_tokens, cost_usd "
            "FROM attempts WHERE job_id = %s ORDER BY number",
            (job_id,),
        ).fetchall()
    assert job is not None
    return job, attempts


def run(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    r = stack.submit(body)
    assert r.status_code == 202, r.text
    return stack.wait(r.json()["id"])


@pytest.mark.parametrize("provider", list(MODEL_FOR))
def test_a_job_runs_end_to_end_on_each_provider(
    stack: Stack, azure_worker: WorkerProcess, provider: str
) -> None:
    model_id = MODEL_FOR[provider]
    prompt = f"Summarise for {provider}: queues decouple producers from consumers."
    job = run(stack, {"model": model_id, "messages": [{"role": "user", "content": prompt}]})

    assert job["status"] == "succeeded", job
    assert job["provider"] == provider and job["model"] == model_id
    assert "queues decouple producers from consumers." in job["result"]
    assert job["finish_reason"] == "stop"
    calls = stack.emulator.calls(provider=provider)
    assert [c["status"] for c in calls] == [200], calls
    usage = job["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert Decimal(job["cost_usd"]) == expected_cost(model_id, usage)

    row, attempts = db_rows(job["id"])
    status, db_provider, db_model, result_text, n_in, n_out, cost = row
    assert (status, db_provider, db_model, result_text) == ("succeeded", provider, model_id, job["result"])
    assert (n_in, n_out) == (usage["input_tokens"], usage["output_tokens"])
    assert cost == expected_cost(model_id, usage)
    assert len(attempts) == 1
    a_status, a_provider, a_deployment, a_in, a_out, a_cost = attempts[0]
    assert (a_status, a_provider, a_deployment) == ("succeeded", provider, job["deployment"])
    assert (a_in, a_out, a_cost) == (n_in, n_out, cost)
    if model_id != "llama3.2":  # the local model is free; every other one costs something
        assert cost > 0


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "bedrock", "cohere"])
def test_a_tool_call_round_trip_through_the_pipeline(stack: Stack, provider: str) -> None:
    model_id = MODEL_FOR[provider]
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = run(stack, {"model": model_id, "messages": [question], "tools": [WEATHER_TOOL]})

    assert first["status"] == "succeeded", first
    assert first["finish_reason"] == "tool_calls"
    (call,) = first["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "example"}
    assert Decimal(first["cost_usd"]) == expected_cost(model_id, first["usage"])

    answer = {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature_c": 18}'}
    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    second = run(stack, {"model": model_id, "messages": [question, turn, answer], "tools": [WEATHER_TOOL]})

    assert second["status"] == "succeeded", second
    assert second["finish_reason"] == "stop" and not second["tool_calls"]
    assert second["result"].startswith("Based on the tool result")
    assert Decimal(second["cost_usd"]) == expected_cost(model_id, second["usage"])


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "cohere", "mistral", "ollama"])
def test_a_json_mode_job_through_the_pipeline(stack: Stack, provider: str) -> None:
    model_id = MODEL_FOR[provider]
    job = run(
        stack,
        {
            "model": model_id,
            "messages": [{"role": "user", "content": "Reply in JSON: name one queue."}],
            "response_format": {"type": "json_object"},
        },
    )
    assert job["status"] == "succeeded", job
    parsed = json.loads(job["result"])
    assert isinstance(parsed, dict) and parsed
    assert Decimal(job["cost_usd"]) == expected_cost(model_id, job["usage"])


@pytest.mark.parametrize("provider", ["gemini", "cohere", "mistral"])
def test_a_json_schema_job_through_the_pipeline(stack: Stack, provider: str) -> None:
    schema = {
        "type": "object",
        "properties": {"queue": {"type": "string"}, "depth": {"type": "integer"}},
        "required": ["queue", "depth"],
    }
    job = run(
        stack,
        {
            "model": MODEL_FOR[provider],
            "messages": [{"role": "user", "content": "Describe one queue."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "queue", "schema": schema}},
        },
    )
    assert job["status"] == "succeeded", job
    assert json.loads(job["result"]) == {"queue": "example", "depth": 42}
