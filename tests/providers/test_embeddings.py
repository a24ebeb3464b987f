"""Every provider adapter's `embed` through its official SDK against the emulator over HTTP.

Parametrised over the default catalog's embedding deployments, one per wire format and model
family: vectors come back one per input, in input order, the model's length (or the asked
`dimensions`), equal to the emulator's deterministic vectors; usage is the provider's count
(Gemini reports none: ours, marked estimated); a call past the per-call input limit is refused
before anything is sent; HTTP errors map onto the taxonomy; a missing key names its variable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from core.embeddings import EmbeddingRequest, EmbeddingResponse, InputType
from emulator import embeddings as emulated_vectors
from routing.catalog import Deployment, catalog_from_dict
from routing.tokens import calibrate, count_text
from tests.conftest import EmulatorHandle
from tests.emulator.clients import FAR, NEAR, QUERY, retrieval_holds
from tests.providers.support import REFUSED_URL, deployment, emulated_target, raises_mapped
from workers.providers import adapter_class, errors
from workers.providers.base import Provider, resolve_target, vectors_in_order
from workers.providers.bedrock_embed import embedding_body, embedding_family
from workers.providers.cohere_embed import to_cohere_embed_params
from workers.providers.gemini_embed import to_gemini_embed_config


@dataclass(frozen=True)
class Case:
    deployment: str
    dimensions: int  # the model's native length
    shorter: int | None  # a shorter length the model can be asked for
    max_inputs: int  # per call


CASES = {
    "openai": Case("openai/text-embedding-3-small", 1536, 256, 2048),
    "azure": Case("azure/text-embedding-3-small", 1536, 256, 2048),
    "cohere-v4": Case("cohere/embed-v4.0", 1536, 512, 96),
    "cohere-v3": Case("cohere/embed-english-v3.0", 1024, None, 96),
    "mistral": Case("mistral/mistral-embed", 1024, None, 256),
    "gemini": Case("gemini/gemini-embedding-001", 3072, 768, 100),
    "bedrock-titan": Case("bedrock/titan-embed-text-v2", 1024, 256, 1),
    "bedrock-cohere": Case("bedrock/cohere-embed-english-v3", 1024, None, 96),
    "ollama": Case("ollama/nomic-embed-text", 768, None, 512),
}
SHORTENABLE = [name for name, case in CASES.items() if case.shorter is not None]
TEXTS = [QUERY, NEAR, FAR]


def build(dep: Deployment | str, url: str) -> Provider:
    dep = deployment(dep) if isinstance(dep, str) else dep
    cls: Any = adapter_class(dep.provider)
    adapter: Provider = cls(emulated_target(dep, url))
    return adapter


def embed_calls(dep: Deployment | str, url: str, requests: list[EmbeddingRequest]) -> list[EmbeddingResponse]:
    """Each request as one call through a fresh adapter (built inside the loop), then closed."""

    async def go() -> list[EmbeddingResponse]:
        adapter = build(dep, url)
        try:
            return [await adapter.embed(request) for request in requests]
        finally:
            await adapter.aclose()

    return asyncio.run(go())


def embed_all(case: Case, url: str, texts: list[str], **fields: Any) -> list[EmbeddingResponse]:
    """`texts` in as few calls as the model allows (Titan: one per text)."""
    step = case.max_inputs
    requests = [EmbeddingRequest(inputs=texts[i : i + step], **fields) for i in range(0, len(texts), step)]
    return embed_calls(case.deployment, url, requests)


@pytest.mark.parametrize("name", CASES)
def test_vectors_come_back_in_input_order_with_usage(emulator: EmulatorHandle, name: str) -> None:
    case = CASES[name]
    responses = embed_all(case, emulator.url, TEXTS)
    vectors = [v for r in responses for v in r.vectors]
    assert vectors == [emulated_vectors.embed(text, case.dimensions) for text in TEXTS]
    assert retrieval_holds(*vectors)
    calls = emulator.calls(kind="embed")
    assert [c["inputs"] for c in calls] == [len(r.vectors) for r in responses]
    assert all(c["status"] == 200 for c in calls)
    provider = deployment(case.deployment).provider
    for response in responses:
        assert response.usage.output_tokens == 0
        if provider == "gemini":  # the Developer API reports no usage for embeddings: ours
            texts = TEXTS[: len(response.vectors)]
            assert response.usage_estimated
            assert response.usage.input_tokens == calibrate(sum(count_text(t) for t in texts), "gemini")
    if provider != "gemini":
        assert not any(r.usage_estimated for r in responses)
        assert sum(r.usage.input_tokens for r in responses) == emulated_vectors.input_tokens(TEXTS)


@pytest.mark.parametrize("name", SHORTENABLE)
def test_dimensions_are_honoured(emulator: EmulatorHandle, name: str) -> None:
    case = CASES[name]
    assert case.shorter is not None and deployment(case.deployment).model.supports_dimensions(case.shorter)
    responses = embed_all(case, emulator.url, [QUERY, FAR], dimensions=case.shorter)
    vectors = [v for r in responses for v in r.vectors]
    assert vectors == [emulated_vectors.embed(t, case.shorter) for t in (QUERY, FAR)]


@pytest.mark.parametrize("name", CASES)
def test_input_type_is_accepted(emulator: EmulatorHandle, name: str) -> None:
    """A query embedded as one (Cohere's input_type, Gemini's task type; the rest ignore it)."""
    (response,) = embed_all(CASES[name], emulator.url, [QUERY], input_type=InputType.SEARCH_QUERY)
    assert response.vectors == [emulated_vectors.embed(QUERY, CASES[name].dimensions)]


@pytest.mark.parametrize("name", CASES)
def test_more_inputs_than_the_call_limit_are_refused_before_a_call(
    emulator: EmulatorHandle, name: str
) -> None:
    case = CASES[name]
    request = EmbeddingRequest(inputs=["w"] * (case.max_inputs + 1))
    with pytest.raises(errors.InvalidRequest, match=rf"takes at most {case.max_inputs} per call"):
        embed_calls(case.deployment, emulator.url, [request])
    assert emulator.calls(kind="embed") == []


def test_a_length_the_catalog_does_not_offer_is_refused_before_a_call(emulator: EmulatorHandle) -> None:
    for name, dimensions, words in [
        ("bedrock-titan", 300, r"cannot make vectors 300 long: its length is 1024 \(shorter: 256, 512\)"),
        ("mistral", 512, r"cannot make vectors 512 long: its length is 1024 \(shorter: none\)"),
        ("openai", 2048, r"its length is 1536 \(shorter: any length up to it\)"),
    ]:
        with pytest.raises(errors.InvalidRequest, match=words):
            embed_all(CASES[name], emulator.url, [QUERY], dimensions=dimensions)
    assert emulator.calls(kind="embed") == []


def test_the_catalogs_limit_applies_below_the_providers(emulator: EmulatorHandle) -> None:
    model = {
        "id": "text-embedding-3-small",
        "provider": "openai",
        "kind": "embedding",
        "dimensions": 1536,
        "max_input_tokens": 8191,
        "max_inputs_per_call": 2,
        "input_price": "0.02",
        "quality": 62,
    }
    catalog = catalog_from_dict({"models": [model], "deployments": [{"name": "small", "model": model["id"]}]})
    small = catalog.deployments["small"]
    with pytest.raises(errors.InvalidRequest, match="at most 2 per call"):
        embed_calls(small, emulator.url, [EmbeddingRequest(inputs=TEXTS)])
    (ok,) = embed_calls(small, emulator.url, [EmbeddingRequest(inputs=TEXTS[:2])])
    assert len(ok.vectors) == 2
    assert [c["inputs"] for c in emulator.calls(kind="embed")] == [2]


def test_a_compatible_server_gets_float_vectors(emulator: EmulatorHandle) -> None:
    model = {
        "id": "bge-small",
        "provider": "compatible",
        "kind": "embedding",
        "dimensions": 768,
        "max_input_tokens": 512,
        "max_inputs_per_call": 64,
        "input_price": "0",
        "quality": 50,
    }
    deployments = [{"name": "local/bge-small", "model": "bge-small", "base_url": "http://127.0.0.1:9/v1"}]
    dep = catalog_from_dict({"models": [model], "deployments": deployments}).deployments["local/bge-small"]
    (response,) = embed_calls(dep, emulator.url, [EmbeddingRequest(inputs=TEXTS)])
    assert response.vectors == [emulated_vectors.embed(t, 768) for t in TEXTS]
    assert response.usage.input_tokens == emulated_vectors.input_tokens(TEXTS)


def test_a_chat_deployment_does_not_embed(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.InvalidRequest, match="'gpt-4o-mini', a chat model: it cannot embed"):
        embed_calls("openai/gpt-4o-mini", emulator.url, [EmbeddingRequest(inputs=[QUERY])])
    with pytest.raises(errors.InvalidRequest, match="anthropic has no embeddings API"):
        embed_calls("anthropic/claude-haiku-4-5", emulator.url, [EmbeddingRequest(inputs=[QUERY])])
    assert emulator.calls() == []


SCRIPTS: list[tuple[dict[str, Any], type[errors.ProviderError]]] = [
    ({"status": 429, "message": "slow down"}, errors.RateLimited),
    ({"status": 500, "message": "boom"}, errors.Transient),
    ({"status": 503}, errors.Transient),
    ({"status": 401, "message": "bad key"}, errors.AuthError),
    ({"status": 400, "message": "bad input"}, errors.InvalidRequest),
]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(("script", "expected"), SCRIPTS, ids=[str(s["status"]) for s, _ in SCRIPTS])
def test_errors_are_mapped(
    emulator: EmulatorHandle, name: str, script: dict[str, Any], expected: type[errors.ProviderError]
) -> None:
    case = CASES[name]
    emulator.configure({deployment(case.deployment).provider: {"script": [script]}})
    raises_mapped(script, expected, lambda: embed_all(case, emulator.url, [QUERY]))
    assert [c["status"] for c in emulator.calls(kind="embed")] == [script["status"]]


@pytest.mark.parametrize("name", CASES)
def test_connection_refused_is_transient(name: str) -> None:
    with pytest.raises(errors.Transient):
        embed_all(CASES[name], REFUSED_URL, [QUERY])


@pytest.mark.parametrize("name", [n for n in CASES if n != "ollama"])  # Ollama takes no key
def test_a_missing_key_names_the_variable(name: str) -> None:
    dep = deployment(CASES[name].deployment)
    assert dep.api_key_env
    with pytest.raises(errors.MissingCredentials, match=dep.api_key_env):
        resolve_target(dep, emulator_url=None, environ={})


# --- the translations, without a call ---------------------------------------------------------------


def test_vectors_are_put_in_input_order_whatever_order_they_came_in() -> None:
    assert vectors_in_order([(2, [2.0]), (0, [0.0]), (1, [1.0])], 3) == [[0.0], [1.0], [2.0]]
    with pytest.raises(errors.ProviderError, match="no vector for input 1 of 3"):
        vectors_in_order([(0, [0.0]), (2, [2.0])], 3)
    with pytest.raises(errors.ProviderError, match="numbered 0 for 2 inputs"):
        vectors_in_order([(0, [0.0]), (0, [0.5])], 2)
    with pytest.raises(errors.ProviderError, match="numbered 5"):
        vectors_in_order([(5, [0.0])], 1)


def test_a_request_names_its_empty_input() -> None:
    with pytest.raises(ValidationError, match=r"inputs\[1\] is empty"):
        EmbeddingRequest(inputs=["a", ""])
    with pytest.raises(ValidationError):
        EmbeddingRequest(inputs=[])
    with pytest.raises(ValidationError):
        EmbeddingRequest(inputs=["a"], dimensions=0)


def test_input_types_become_each_providers_own() -> None:
    plain = EmbeddingRequest(inputs=["a"])
    assert to_cohere_embed_params(plain, "embed-v4.0")["input_type"] == "search_document"
    query = EmbeddingRequest(inputs=["a"], input_type=InputType.SEARCH_QUERY, dimensions=256)
    assert to_cohere_embed_params(query, "embed-v4.0") == {
        "model": "embed-v4.0",
        "texts": ["a"],
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }
    tasks = {
        t: to_gemini_embed_config(EmbeddingRequest(inputs=["a"], input_type=t)).task_type for t in InputType
    }
    assert tasks == {
        InputType.SEARCH_DOCUMENT: "RETRIEVAL_DOCUMENT",
        InputType.SEARCH_QUERY: "RETRIEVAL_QUERY",
        InputType.CLASSIFICATION: "CLASSIFICATION",
        InputType.CLUSTERING: "CLUSTERING",
    }
    assert to_gemini_embed_config(plain).task_type is None
    assert embedding_body("cohere", plain) == {"texts": ["a"], "input_type": "search_document"}
    assert embedding_body("titan", query) == {"inputText": "a", "normalize": True, "dimensions": 256}


def test_bedrock_knows_its_embedding_families() -> None:
    assert embedding_family("amazon.titan-embed-text-v2:0") == "titan"
    assert embedding_family("us.cohere.embed-v4:0") == "cohere"
    assert embedding_family("arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-english-v3") == "cohere"
    with pytest.raises(errors.InvalidRequest, match="no embedding body known"):
        embedding_family("amazon.nova-lite-v1:0")
