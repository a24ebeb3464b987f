"""Embedding jobs' pure parts (routing/embeddings.py): calls planned within a model's limits in
input order, costs exact in Decimal, one model per corpus, and failover only between
deployments of the same model."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from core.embeddings import InputType
from core.types import Usage
from routing.breaker import DeploymentHealth
from routing.catalog import Catalog, catalog_from_dict
from routing.embeddings import (
    SAME_MODEL,
    EmbeddingInput,
    EmbeddingPlanError,
    corpus_model,
    embedding_cost,
    embedding_inputs,
    estimate_embedding_cost,
    plan_calls,
    route_embedding,
)
from routing.tokens import calibrate, count_text
from routing.types import HealthLookup, MixedModels, NoRoute, RoutingDecision, UnknownModel, WrongModelKind

NOW = 1_700_000_000.0


def embedder(mid: str, provider: str = "openai", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": mid,
        "provider": provider,
        "kind": "embedding",
        "dimensions": 1024,
        "max_input_tokens": 100,
        "max_inputs_per_call": 4,
        "input_price": "0.13",
        "quality": 60,
    }
    return {**base, **kw}


CHAT = {
    "id": "chat",
    "provider": "openai",
    "context_window": 1000,
    "max_output_tokens": 100,
    "input_price": "1",
    "output_price": "2",
    "quality": 50,
}
CATALOG = catalog_from_dict(
    {
        "models": [embedder("small"), embedder("large", input_price="0.02"), CHAT],
        "deployments": [
            {"name": "east/small", "model": "small"},
            {"name": "west/small", "model": "small", "weight": 3},
            {"name": "north/small", "model": "small"},
            {"name": "east/large", "model": "large"},
            {"name": "east/chat", "model": "chat"},
        ],
    }
)


def model(mid: str, catalog: Catalog = CATALOG) -> Any:
    spec = catalog.model(mid)
    assert spec is not None
    return spec


def items(*token_counts: int) -> list[EmbeddingInput]:
    return [EmbeddingInput(f"id{i}", f"text {i}", n) for i, n in enumerate(token_counts)]


# --- planning ------------------------------------------------------------------------------------


def test_inputs_are_counted_once_with_routings_tokenizer() -> None:
    inputs = embedding_inputs([("a", "Hello there"), ("b", "A somewhat longer sentence to count.")])
    assert [(i.id, i.raw_tokens) for i in inputs] == [
        ("a", count_text("Hello there")),
        ("b", count_text("A somewhat longer sentence to count.")),
    ]


def test_calls_hold_at_most_max_inputs_in_order() -> None:
    inputs = items(*([10] * 10))
    calls = plan_calls(inputs, model("small"))
    assert [len(c.inputs) for c in calls] == [4, 4, 2]
    assert [i for c in calls for i in c.ids] == [f"id{n}" for n in range(10)]
    assert [c.tokens for c in calls] == [40, 40, 20]  # openai: calibration 1.0
    request = calls[2].request(dimensions=256, input_type=InputType.SEARCH_DOCUMENT)
    assert request.inputs == ["text 8", "text 9"] and request.counted_tokens == 20
    assert request.dimensions == 256 and request.input_type is InputType.SEARCH_DOCUMENT


def test_calls_hold_at_most_max_tokens_per_call() -> None:
    capped = catalog_from_dict(
        {
            "models": [embedder("capped", max_inputs_per_call=100, max_tokens_per_call=100)],
            "deployments": [{"name": "c", "model": "capped"}],
        }
    )
    calls = plan_calls(items(60, 30, 20, 50, 50, 1), model("capped", capped))
    assert [c.ids for c in calls] == [["id0", "id1"], ["id2", "id3"], ["id4", "id5"]]
    assert [c.tokens for c in calls] == [90, 70, 51]
    assert all(c.tokens <= 100 for c in calls)


def test_tokens_are_calibrated_for_the_models_provider() -> None:
    mistral = catalog_from_dict(
        {"models": [embedder("m", provider="mistral")], "deployments": [{"name": "m", "model": "m"}]}
    )
    (call,) = plan_calls(items(10, 10), model("m", mistral))
    assert call.tokens == 2 * calibrate(10, "mistral") and call.tokens > 20
    # 87 raw tokens are 101 for Mistral's tokenizer: over the 100-token limit there, not here
    with pytest.raises(EmbeddingPlanError):
        plan_calls(items(87), model("m", mistral))
    assert len(plan_calls(items(87), model("small"))) == 1


def test_an_input_over_the_limit_is_refused_by_its_id() -> None:
    with pytest.raises(EmbeddingPlanError) as info:
        plan_calls(items(10, 101, 10), model("small"))
    assert info.value.input_id == "id1"
    assert str(info.value) == (
        "input 'id1' has about 101 tokens, over small's limit of 100 per input: "
        "split it first (routing.chunking.chunk_text)"
    )


def test_duplicate_ids_and_empty_texts_are_refused() -> None:
    with pytest.raises(EmbeddingPlanError, match="'a' appears twice") as info:
        plan_calls([EmbeddingInput("a", "x", 1), EmbeddingInput("a", "y", 1)], model("small"))
    assert info.value.input_id == "a"
    with pytest.raises(EmbeddingPlanError, match="input 'b' is empty"):
        plan_calls([EmbeddingInput("b", "", 0)], model("small"))
    assert plan_calls([], model("small")) == []


def test_only_an_embedding_model_plans() -> None:
    with pytest.raises(WrongModelKind, match="'chat' is a chat model"):
        plan_calls(items(1), model("chat"))


def test_10000_chunks_take_the_fewest_calls() -> None:
    big = catalog_from_dict(
        {
            "models": [embedder("big", max_inputs_per_call=2048, max_input_tokens=8191)],
            "deployments": [{"name": "b", "model": "big"}],
        }
    )
    calls = plan_calls(items(*([200] * 10_000)), model("big", big))
    assert len(calls) == 5 == -(-10_000 // 2048)
    assert [i for c in calls for i in c.ids] == [f"id{n}" for n in range(10_000)]


# --- cost ----------------------------------------------------------------------------------------


def test_costs_are_exact_decimals() -> None:
    small = model("small")  # $0.13 per million
    assert embedding_cost(small, Usage(input_tokens=1_000_000)) == Decimal("0.13")
    assert embedding_cost(small, Usage(input_tokens=37)) == Decimal("0.00000481")
    assert embedding_cost(small, Usage(input_tokens=0)) == 0
    calls = plan_calls(items(*([37] * 9)), small)
    estimate = estimate_embedding_cost(small, calls)
    assert estimate == sum((embedding_cost(small, Usage(input_tokens=c.tokens)) for c in calls), Decimal(0))
    assert estimate == Decimal("0.00004329") == Decimal(37 * 9) * Decimal("0.13") / 1_000_000


# --- one model per corpus ---------------------------------------------------------------------------


def test_a_corpus_names_one_model() -> None:
    assert corpus_model(["small", "east/small", "west/small"], CATALOG).id == "small"
    with pytest.raises(MixedModels) as info:
        corpus_model(["small", "east/large", "west/small"], CATALOG)
    message = str(info.value)
    assert "one model" in message and "small (as 'small', 'west/small')" in message
    assert "large (as 'east/large')" in message
    with pytest.raises(
        WrongModelKind, match="'east/chat' is a chat model; embeddings need an embedding model: large, small"
    ):
        corpus_model(["east/chat"], CATALOG)
    with pytest.raises(UnknownModel, match="'nope'"):
        corpus_model(["nope"], CATALOG)


# --- the same-model rule ---------------------------------------------------------------------------


def lookup(snapshot: Mapping[str, DeploymentHealth]) -> HealthLookup:
    return lambda names: {n: snapshot[n] for n in names if n in snapshot}


def decide(name: str, health: Mapping[str, DeploymentHealth] | None = None, **kw: Any) -> RoutingDecision:
    return route_embedding(name, CATALOG, lookup(health or {}), now=NOW, rng=random.Random(0), **kw)


def names(decision: RoutingDecision) -> list[str]:
    return [c.deployment.name for c in decision.candidates]


def test_a_model_is_served_by_its_deployments_only() -> None:
    decision = decide("small", raw_tokens=1000)
    assert decision.strategy == SAME_MODEL and decision.retry_at is None
    assert sorted(names(decision)) == ["east/small", "north/small", "west/small"]
    assert {c.deployment.model.id for c in decision.candidates} == {"small"}
    assert all(
        c.estimated_cost_usd == Decimal("0.00013") and c.input_tokens == 1000 for c in decision.candidates
    )
    # load-balanced by weight: west (weight 3) leads most often
    leaders = [
        names(route_embedding("small", CATALOG, now=NOW, rng=random.Random(seed)))[0] for seed in range(200)
    ]
    assert leaders.count("west/small") > leaders.count("east/small") + 40


def test_a_named_deployment_comes_first_then_the_same_models_others() -> None:
    for seed in range(20):
        decision = route_embedding("north/small", CATALOG, now=NOW, rng=random.Random(seed))
        assert names(decision)[0] == "north/small"
        assert sorted(names(decision)[1:]) == ["east/small", "west/small"]
        assert decision.candidates[1].detail.startswith("failover: same model")


def test_failover_stays_on_the_model() -> None:
    decision = decide("east/small", exclude=frozenset({"east/small"}))
    assert sorted(names(decision)) == ["north/small", "west/small"]
    assert [(e.deployment, e.filter) for e in decision.excluded] == [("east/small", "failover")]
    # every deployment of the model tried: the cheaper model is never a fallback
    tried = frozenset({"east/small", "west/small", "north/small"})
    with pytest.raises(NoRoute) as info:
        decide("small", exclude=tried, lasting_exclude=tried)
    assert {e.deployment for e in info.value.exclusions} == tried
    assert "east/large" not in str(info.value)
    # a failure a second round may cure: round again over the same model
    again = decide("small", exclude=tried, lasting_exclude=frozenset({"east/small"}))
    assert sorted(names(again)) == ["north/small", "west/small"]


def test_open_breakers_wait_rather_than_change_model() -> None:
    health = {
        "east/small": DeploymentHealth(breaker="open", open_until=NOW + 30),
        "west/small": DeploymentHealth(breaker="open", open_until=NOW + 10),
    }
    assert names(decide("small", health)) == ["north/small"]
    health["north/small"] = DeploymentHealth(breaker="open", open_until=NOW + 20)
    waiting = decide("small", health)
    assert waiting.candidates == () and waiting.retry_at == NOW + 10
    assert {e.filter for e in waiting.excluded} == {"breaker"}


def test_an_embedding_route_refuses_chat_and_unknown_names() -> None:
    with pytest.raises(WrongModelKind, match="'chat' is a chat model"):
        decide("chat")
    with pytest.raises(UnknownModel):
        decide("gpt-9")
