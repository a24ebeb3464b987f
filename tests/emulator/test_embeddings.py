"""The emulator's embedding endpoints through each provider's official SDK, over HTTP.

For every wire format: the vectors' count, order and dimensions, that they are deterministic and
normalised, that texts sharing words come out closer than unrelated ones, the provider's own
encodings, and that a call past the provider's real per-call input limit gets its error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import cohere
import openai
import pytest
from botocore.exceptions import ClientError
from google.genai import errors as genai_errors
from google.genai import types
from mistralai.client import errors as mistral_errors

from emulator import embeddings
from tests.conftest import EmulatorHandle
from tests.emulator.clients import (
    FAR,
    NEAR,
    QUERY,
    azure_client,
    bedrock_client,
    cohere_client,
    cosine,
    gemini_client,
    mistral_client,
    norm,
    openai_client,
    retrieval_holds,
)


def test_vectors_are_deterministic_normalised_and_meaningful() -> None:
    a, b = embeddings.embed(QUERY, 256), embeddings.embed(QUERY, 256)
    assert a == b and len(a) == 256
    assert norm(a) == pytest.approx(1.0, abs=1e-6)
    assert retrieval_holds(a, embeddings.embed(NEAR, 256), embeddings.embed(FAR, 256))
    # plural and singular share trigrams, so they stay close without sharing the word
    word = embeddings.embed("embedding", 512)
    assert (
        cosine(word, embeddings.embed("embeddings", 512))
        > cosine(word, embeddings.embed("tomato", 512)) + 0.25
    )
    # a text without words still gets a unit vector
    assert norm(embeddings.embed("?!", 64)) == pytest.approx(1.0, abs=1e-6)
    assert embeddings.dimensions_for("models/gemini-embedding-001") == 3072
    assert embeddings.dimensions_for("some-unknown-model") == 768


def test_cohere_encodings() -> None:
    vector = embeddings.embed(QUERY, 16)
    assert embeddings.encode(vector, "base64") == embeddings.float32_base64(vector)
    int8 = embeddings.encode(vector, "int8")
    assert isinstance(int8, list) and max(abs(v) for v in int8) == 127
    uint8 = embeddings.encode(vector, "uint8")
    assert uint8 == [v + 128 for v in int8]
    ubinary = embeddings.encode(vector, "ubinary")
    assert isinstance(ubinary, list) and len(ubinary) == 2
    bits = "".join(f"{byte:08b}" for byte in ubinary)
    assert bits == "".join("1" if v > 0 else "0" for v in vector)


# --- OpenAI, Azure, Ollama and compatible servers ---------------------------------------------


def test_openai_default_base64_is_decoded_by_the_sdk(emulator: EmulatorHandle) -> None:
    client = openai_client(emulator.url)
    texts = [QUERY, NEAR, FAR]
    default = client.embeddings.create(model="text-embedding-3-small", input=texts)
    as_float = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    # the SDK asked for base64 (it does unless told otherwise) and decoded it into the same floats
    assert [d.embedding for d in default.data] == [d.embedding for d in as_float.data]
    assert [d.index for d in default.data] == [0, 1, 2]
    assert all(len(d.embedding) == 1536 for d in default.data)
    query, near, far = (d.embedding for d in default.data)
    assert retrieval_holds(query, near, far)
    assert default.usage.prompt_tokens == default.usage.total_tokens == embeddings.input_tokens(texts)
    # asked for base64 explicitly, the SDK hands the string back untouched
    raw = client.embeddings.create(model="text-embedding-3-small", input=QUERY, encoding_format="base64")
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<1536f", base64.b64decode(encoded)))
    assert decoded == default.data[0].embedding


def test_openai_order_determinism_and_dimensions(emulator: EmulatorHandle) -> None:
    client = openai_client(emulator.url)
    texts = [f"document number {i} about topic {i % 3}" for i in range(7)]
    batch = client.embeddings.create(model="text-embedding-3-large", input=texts, dimensions=256)
    alone = [
        client.embeddings.create(model="text-embedding-3-large", input=t, dimensions=256).data[0].embedding
        for t in reversed(texts)
    ][::-1]
    assert [d.embedding for d in batch.data] == alone
    assert all(
        len(d.embedding) == 256 and norm(d.embedding) == pytest.approx(1, abs=1e-5) for d in batch.data
    )
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072
    # token arrays are inputs too: one array, or a list of them
    one = client.embeddings.create(model="text-embedding-3-small", input=[1, 2, 3])
    assert len(one.data) == 1 and one.usage.prompt_tokens == 3
    two = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3, 4, 5]])
    assert len(two.data) == 2 and two.usage.prompt_tokens == 5
    calls = emulator.calls(kind="embed")
    assert [c["inputs"] for c in calls[:2]] == [7, 1]
    assert all(c["kind"] == "embed" and c["status"] == 200 for c in calls)


def test_openai_refuses_more_than_2048_inputs_and_bad_dimensions(emulator: EmulatorHandle) -> None:
    client = openai_client(emulator.url)
    ok = client.embeddings.create(model="text-embedding-3-small", input=["w"] * 2048, dimensions=8)
    assert len(ok.data) == 2048
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="text-embedding-3-small", input=["w"] * 2049, dimensions=8)
    assert info.value.status_code == 400 and "'$.input' is invalid" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input=QUERY, dimensions=4096)
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        client.embeddings.create(model="text-embedding-ada-002", input=QUERY, dimensions=256)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input="")
    # refused before reaching the fault machinery: only the good call is in the log
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [2048]


def test_azure_ollama_and_compatible_paths(emulator: EmulatorHandle) -> None:
    azure = azure_client(emulator.url).embeddings.create(model="text-embedding-3-large", input=[QUERY, FAR])
    assert [len(d.embedding) for d in azure.data] == [3072, 3072]
    ollama = openai_client(emulator.url, "/ollama/v1").embeddings.create(
        model="nomic-embed-text", input=QUERY
    )
    assert len(ollama.data[0].embedding) == 768
    compatible = openai_client(emulator.url, "/compatible/v1")
    assert len(compatible.embeddings.create(model="bge-small", input=QUERY).data[0].embedding) == 768
    providers = [(c["provider"], c["model"]) for c in emulator.calls(kind="embed")]
    assert providers == [
        ("azure", "text-embedding-3-large"),
        ("ollama", "nomic-embed-text"),
        ("compatible", "bge-small"),
    ]


# --- Cohere ----------------------------------------------------------------------------------


def test_cohere_embed_v4_and_v3(emulator: EmulatorHandle) -> None:
    client = cohere_client(emulator.url)
    texts = [QUERY, NEAR, FAR]
    v4 = client.embed(
        model="embed-v4.0", texts=texts, input_type="search_document", embedding_types=["float"]
    )
    vectors = v4.embeddings.float_
    assert vectors is not None and [len(v) for v in vectors] == [1536] * 3
    assert retrieval_holds(*vectors)
    assert v4.texts == texts and v4.meta is not None and v4.meta.billed_units is not None
    assert v4.meta.billed_units.input_tokens == embeddings.input_tokens(texts)
    short = client.embed(
        model="embed-v4.0",
        texts=texts,
        input_type="search_query",
        embedding_types=["float"],
        output_dimension=256,
    )
    assert short.embeddings.float_ is not None and len(short.embeddings.float_[0]) == 256
    v3 = client.embed(
        model="embed-english-v3.0",
        texts=[QUERY],
        input_type="search_query",
        embedding_types=["float", "int8"],
    )
    assert v3.embeddings.float_ is not None and len(v3.embeddings.float_[0]) == 1024
    assert v3.embeddings.int8 is not None and len(v3.embeddings.int8[0]) == 1024
    # deterministic, and the same vector whatever the input type
    assert v3.embeddings.float_[0] == embeddings.embed(QUERY, 1024)


def test_cohere_limits_and_required_fields(emulator: EmulatorHandle) -> None:
    client = cohere_client(emulator.url)
    ok = client.embed(model="embed-english-v3.0", texts=["t"] * 96, input_type="clustering")
    assert ok.embeddings.float_ is not None and len(ok.embeddings.float_) == 96
    with pytest.raises(cohere.BadRequestError) as info:
        client.embed(model="embed-english-v3.0", texts=["t"] * 97, input_type="clustering")
    assert info.value.status_code == 400
    assert "at most 96 - received 97" in info.value.body["message"]
    with pytest.raises(cohere.BadRequestError, match="input_type is required"):
        client.embed(model="embed-english-v3.0", texts=["t"], input_type=None)
    with pytest.raises(cohere.BadRequestError, match="output_dimension"):
        client.embed(model="embed-english-v3.0", texts=["t"], input_type="clustering", output_dimension=256)
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [96]


# --- Mistral ---------------------------------------------------------------------------------


def test_mistral_embeddings(emulator: EmulatorHandle) -> None:
    client = mistral_client(emulator.url)
    r = client.embeddings.create(model="mistral-embed", inputs=[QUERY, NEAR, FAR])
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(v is not None and len(v) == 1024 for v in vectors)
    assert retrieval_holds(*(v for v in vectors if v is not None))
    assert r.usage.prompt_tokens == embeddings.input_tokens([QUERY, NEAR, FAR])
    assert r.usage.completion_tokens == 0
    one = client.embeddings.create(model="mistral-embed", inputs=QUERY)
    assert one.data[0].embedding == vectors[0]


def test_mistral_refuses_more_than_256_inputs(emulator: EmulatorHandle) -> None:
    client = mistral_client(emulator.url)
    assert len(client.embeddings.create(model="mistral-embed", inputs=["w"] * 256).data) == 256
    with pytest.raises(mistral_errors.SDKError) as info:
        client.embeddings.create(model="mistral-embed", inputs=["w"] * 257)
    assert info.value.status_code == 400
    body = json.loads(info.value.body)
    assert body["message"] == "Too many inputs in request, split into more batches."
    assert body["code"] == "3210" and body["type"] == "invalid_request_prompt"
    # a call is also capped at 16384 tokens in all
    with pytest.raises(mistral_errors.SDKError, match="Too many tokens overall"):
        client.embeddings.create(model="mistral-embed", inputs=["word " * 4000] * 4)
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [256]


# --- Gemini ----------------------------------------------------------------------------------


def gemini_embed(url: str, contents: list[str], **config: Any) -> types.EmbedContentResponse:
    async def go() -> types.EmbedContentResponse:
        client = gemini_client(url)
        try:
            return await client.aio.models.embed_content(
                model="gemini-embedding-001", contents=contents, config=types.EmbedContentConfig(**config)
            )
        finally:
            await client.aio.aclose()

    return asyncio.run(go())


def test_gemini_batch_embed_contents(emulator: EmulatorHandle) -> None:
    r = gemini_embed(emulator.url, [QUERY, NEAR, FAR], task_type="RETRIEVAL_DOCUMENT")
    assert r.embeddings is not None
    vectors = [e.values for e in r.embeddings]
    assert all(v is not None and len(v) == 3072 for v in vectors)
    assert retrieval_holds(*(v for v in vectors if v is not None))
    short = gemini_embed(emulator.url, [FAR, QUERY], task_type="RETRIEVAL_QUERY", output_dimensionality=768)
    assert short.embeddings is not None
    assert [e.values for e in short.embeddings] == [embeddings.embed(FAR, 768), embeddings.embed(QUERY, 768)]
    calls = emulator.calls(kind="embed")
    assert [(c["provider"], c["model"], c["inputs"]) for c in calls] == [
        ("gemini", "gemini-embedding-001", 3),
        ("gemini", "gemini-embedding-001", 2),
    ]


def test_gemini_refuses_more_than_100_contents(emulator: EmulatorHandle) -> None:
    assert gemini_embed(emulator.url, ["w"] * 100, output_dimensionality=8).embeddings is not None
    with pytest.raises(genai_errors.ClientError) as info:
        gemini_embed(emulator.url, ["w"] * 101, output_dimensionality=8)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert "at most 100 requests can be in one batch" in str(info.value.message)


# --- Bedrock ---------------------------------------------------------------------------------


def invoke(url: str, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    response = bedrock_client(url).invoke_model(modelId=model, body=json.dumps(body))
    return json.loads(response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


def test_bedrock_titan_one_text_per_call(emulator: EmulatorHandle) -> None:
    vectors = []
    for text in (QUERY, NEAR, FAR):
        body, headers = invoke(
            emulator.url, "amazon.titan-embed-text-v2:0", {"inputText": text, "dimensions": 512}
        )
        assert len(body["embedding"]) == 512 and body["embeddingsByType"]["float"] == body["embedding"]
        assert body["inputTextTokenCount"] == int(headers["x-amzn-bedrock-input-token-count"])
        vectors.append(body["embedding"])
    assert retrieval_holds(*vectors)
    default, _ = invoke(emulator.url, "amazon.titan-embed-text-v2:0", {"inputText": QUERY})
    assert len(default["embedding"]) == 1024 and norm(default["embedding"]) == pytest.approx(1, abs=1e-5)
    raw, _ = invoke(emulator.url, "amazon.titan-embed-text-v2:0", {"inputText": QUERY, "normalize": False})
    assert norm(raw["embedding"]) > 1.5  # not normalised: the hashed feature weights as they are
    with pytest.raises(ClientError) as info:
        invoke(emulator.url, "amazon.titan-embed-text-v2:0", {"inputText": [QUERY, NEAR]})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "#/inputText: expected type: String, found: JSONArray" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="not a valid enum value"):
        invoke(emulator.url, "amazon.titan-embed-text-v2:0", {"inputText": QUERY, "dimensions": 300})
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [1, 1, 1, 1, 1]


def test_bedrock_cohere_embed(emulator: EmulatorHandle) -> None:
    body, _ = invoke(
        emulator.url,
        "cohere.embed-english-v3",
        {"texts": [QUERY, NEAR, FAR], "input_type": "search_document"},
    )
    assert body["response_type"] == "embeddings_floats" and body["texts"] == [QUERY, NEAR, FAR]
    assert [len(v) for v in body["embeddings"]] == [1024] * 3
    assert retrieval_holds(*body["embeddings"])
    typed, _ = invoke(
        emulator.url,
        "cohere.embed-multilingual-v3",
        {"texts": [QUERY], "input_type": "search_query", "embedding_types": ["float", "int8"]},
    )
    assert typed["response_type"] == "embeddings_by_type"
    assert (
        typed["embeddings"]["float"] == [body["embeddings"][0]]
        and len(typed["embeddings"]["int8"][0]) == 1024
    )
    invoke(emulator.url, "cohere.embed-english-v3", {"texts": ["t"] * 96, "input_type": "clustering"})
    with pytest.raises(ClientError) as info:
        invoke(emulator.url, "cohere.embed-english-v3", {"texts": ["t"] * 97, "input_type": "clustering"})
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "expected maximum item count: 96, found: 97" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match=r"required key \[input_type\]"):
        invoke(emulator.url, "cohere.embed-english-v3", {"texts": ["t"]})
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [3, 1, 96]


def test_embedding_calls_go_through_the_fault_machinery(emulator: EmulatorHandle) -> None:
    emulator.configure(
        {
            "text-embedding-3-small": {"outage": True},
            "embed-english-v3.0": {"script": [{"status": 500, "message": "scripted failure"}]},
        }
    )
    with pytest.raises(openai.InternalServerError) as info:
        openai_client(emulator.url).embeddings.create(model="text-embedding-3-small", input=QUERY)
    assert info.value.status_code == 503
    client = cohere_client(emulator.url)
    with pytest.raises(cohere.core.api_error.ApiError, match="scripted failure"):
        client.embed(model="embed-english-v3.0", texts=[QUERY], input_type="clustering")
    assert client.embed(model="embed-english-v3.0", texts=[QUERY], input_type="clustering").embeddings.float_
    assert [c["status"] for c in emulator.calls(kind="embed")] == [503, 500, 200]
