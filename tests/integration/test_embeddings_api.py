"""`POST /v1/embeddings` with the official `openai` SDK unchanged but for base_url, and its
asynchronous sibling `POST /v1/embeddings/jobs`, on the real stack: vectors compared with the
emulator's deterministic ones, calls counted at the emulator, usage and cost as recorded."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from emulator.embeddings import embed as emulator_vector
from tests.embedding_support import close
from tests.integration.conftest import Stack

PRICE_SMALL = Decimal("0.02")  # text-embedding-3-small, USD per million input tokens


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def embed_calls(stack: Stack) -> list[dict[str, Any]]:
    return [c for c in stack.emulator.calls() if c["kind"] == "embed"]


def test_openai_sdk_embeddings_float_and_base64_with_dimensions(stack: Stack, client: openai.OpenAI) -> None:
    texts = ["the lighthouse keeper trims the wick", "bees pollinate city gardens", "sourdough needs flour"]
    as_floats = client.embeddings.create(
        model="text-embedding-3-small", input=texts, dimensions=256, encoding_format="float"
    )
    assert [d.index for d in as_floats.data] == [0, 1, 2]
    for text, datum in zip(texts, as_floats.data, strict=True):
        assert close(datum.embedding, emulator_vector(text, 256))
    assert as_floats.model == "text-embedding-3-small"
    calls = embed_calls(stack)
    assert len(calls) == 1 and calls[0]["inputs"] == 3  # one provider call for the three texts
    assert as_floats.usage.prompt_tokens == calls[0]["tokens"] == as_floats.usage.total_tokens

    # The SDK's default: it asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model="text-embedding-3-small", input=texts[0], dimensions=64)
    assert len(decoded.data) == 1 and close(decoded.data[0].embedding, emulator_vector(texts[0], 64))

    raw = httpx.post(
        f"{stack.api_url}/v1/embeddings",
        headers={"Authorization": f"Bearer {stack.key}"},
        json={"model": "text-embedding-3-small", "input": texts[1], "encoding_format": "base64"},
        timeout=30,
    ).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    assert close(list(struct.unpack(f"<{len(blob) // 4}f", blob)), emulator_vector(texts[1], 1536))

    # The jobs are durable like any other, with their usage and cost.
    job = stack.job(raw["llmqueue"]["job_ids"][0])
    assert job["kind"] == "embedding" and job["status"] == "succeeded"
    assert job["model"] == "text-embedding-3-small" and job["inputs"] == 1
    tokens = job["usage"]["input_tokens"]
    assert tokens == raw["usage"]["prompt_tokens"] > 0
    assert Decimal(job["cost_usd"]) == Decimal(tokens) * PRICE_SMALL / 1_000_000


def test_inputs_past_one_call_become_several_jobs_in_order(stack: Stack, client: openai.OpenAI) -> None:
    texts = [f"passage {i} about river restoration and gravel bars" for i in range(200)]
    answer = client.embeddings.create(model="embed-english-v3.0", input=texts, encoding_format="float")
    assert [d.index for d in answer.data] == list(range(200))
    for i in (0, 95, 96, 199):  # either side of Cohere's 96 inputs a call
        assert close(answer.data[i].embedding, emulator_vector(texts[i], 1024))
    calls = embed_calls(stack)
    assert sorted(c["inputs"] for c in calls) == [8, 96, 96]
    assert answer.usage.prompt_tokens == sum(c["tokens"] for c in calls)


def test_wrong_models_and_inputs_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model="gpt-4o-mini", input="hello")
    assert chat_model.value.code == "wrong_model_kind"
    message = chat_model.value.message
    assert "embedding model" in message and "text-embedding-3-small" in message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="no-such-embedder", input="hello")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="embed-english-v3.0", input="hello", dimensions=256)
    assert dims.value.code == "unsupported_dimensions" and dims.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model="text-embedding-3-small", input=["fine", ""])
    assert empty.value.param == "input.1"
    # And the reverse: an embedding model named for a chat completion.
    with pytest.raises(openai.UnprocessableEntityError) as reverse:
        client.chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "hi"}]
        )
    assert reverse.value.code == "wrong_model_kind" and reverse.value.param == "model"


def test_async_embedding_jobs_read_back_with_their_vectors(stack: Stack) -> None:
    inputs = [{"id": f"faq-{i}", "text": f"question {i}: how do I feed my starter?"} for i in range(5)]
    accepted = stack.client.post(
        "/v1/embeddings/jobs",
        json={"model": "mistral-embed", "input": inputs, "metadata": {"corpus": "faq"}},
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["inputs"] == 5 and len(body["data"]) == 1
    job_id = body["data"][0]["id"]
    done = stack.wait(job_id)
    assert done["status"] == "succeeded" and done["kind"] == "embedding"
    assert [v["id"] for v in done["embeddings"]] == [i["id"] for i in inputs]
    for given, vector in zip(inputs, done["embeddings"], strict=True):
        assert close(vector["embedding"], emulator_vector(given["text"], 1024))
    light = stack.client.get(f"/v1/jobs/{job_id}", params={"include_vectors": "false"}).json()
    assert light["embeddings"] is None and light["usage"]["input_tokens"] == done["usage"]["input_tokens"]
    assert Decimal(light["cost_usd"]) == Decimal(done["usage"]["input_tokens"]) * Decimal("0.10") / 1_000_000

    twice = stack.client.post(
        "/v1/embeddings/jobs", json={"model": "mistral-embed", "input": [{"id": "a", "text": "x"}] * 2}
    )
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "input.1"


def test_budgets_at_intake_and_at_dispatch(stack: Stack, admin_stack: Stack, client: openai.OpenAI) -> None:
    key_id = stack.client.get("/v1/keys/self").json()["id"]
    # Less than one call's estimate: refused before anything is stored or called.
    admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "0.000001"}).raise_for_status()
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.embeddings.create(model="text-embedding-3-large", input=["word " * 500] * 3)
    assert refused.value.code == "budget_exceeded" and "would cost about" in refused.value.message
    queued = stack.client.post(
        "/v1/embeddings/jobs", json={"model": "text-embedding-3-large", "input": ["word " * 500]}
    )
    assert queued.status_code == 422 and queued.json()["error"]["code"] == "budget_exceeded"
    assert embed_calls(stack) == []
    # Enough: the call reserves its cost, then settles what it really cost.
    admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "1"}).raise_for_status()
    answer = client.embeddings.create(model="text-embedding-3-large", input="word " * 50)
    own = stack.client.get("/v1/keys/self").json()
    assert Decimal(own["budget"]["spent_usd"]) == Decimal(
        stack.job(answer.model_extra["llmqueue"]["job_ids"][0])["cost_usd"]
    )
    assert Decimal(own["budget"]["reserved_usd"]) == 0


def test_a_retry_with_the_same_idempotency_key_answers_from_the_same_jobs(
    stack: Stack, client: openai.OpenAI
) -> None:
    body = {"model": "mistral-embed", "input": ["alpha", "beta"]}
    first = client.embeddings.with_raw_response.create(**body, extra_headers={"Idempotency-Key": "emb-1"})
    again = client.embeddings.with_raw_response.create(**body, extra_headers={"Idempotency-Key": "emb-1"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (
        first.parse().model_extra["llmqueue"]["job_ids"] == again.parse().model_extra["llmqueue"]["job_ids"]
    )
    assert [d.embedding for d in first.parse().data] == [d.embedding for d in again.parse().data]
    assert len(embed_calls(stack)) == 1  # one call, whatever the retries
    with pytest.raises(openai.ConflictError):
        client.embeddings.create(
            model="mistral-embed", input=["other"], extra_headers={"Idempotency-Key": "emb-1"}
        )
