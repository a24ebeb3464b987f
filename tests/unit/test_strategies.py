"""Routing strategies on hand-built catalogs: cost, quality, balanced, performance, round
robin, manual with fallbacks, weighted load balancing, and the routing errors."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from core.types import ChatRequest
from routing.breaker import DeploymentHealth
from routing.catalog import Catalog, catalog_from_dict, get_catalog
from routing.router import route
from routing.strategies import STRATEGIES
from routing.types import RoutingDecision, RoutingError, RoutingRequest, UnknownModel, UnknownStrategy
from tests.unit.test_filters import lookup

NOW = 1_700_000_000.0


def model(
    mid: str, *, inp: str, out: str, quality: float, latency: float = 1000, **extra: Any
) -> dict[str, Any]:
    return {
        "id": mid,
        "provider": extra.pop("provider", "openai"),
        "context_window": extra.pop("context_window", 128_000),
        "max_output_tokens": extra.pop("max_output_tokens", 16_384),
        "input_price": inp,
        "output_price": out,
        "capabilities": extra.pop("capabilities", ["tools", "streaming"]),
        "quality": quality,
        "latency_ms": latency,
        **extra,
    }


def make_catalog(models: list[dict[str, Any]], deployments: list[dict[str, Any]] | None = None) -> Catalog:
    deps = (
        deployments
        if deployments is not None
        else [{"name": f"d/{m['id']}", "model": m["id"]} for m in models]
    )
    return catalog_from_dict({"models": models, "deployments": deps})


THREE = make_catalog(
    [
        model("cheap", inp="0.10", out="0.40", quality=50, latency=400),
        model("mid", inp="1.00", out="4.00", quality=75, latency=900),
        model("top", inp="5.00", out="20.00", quality=90, latency=2000),
    ]
)
REQ = ChatRequest(messages=[{"role": "user", "content": "Summarize the plot of Hamlet in two sentences."}])


def decide(
    catalog: Catalog = THREE, health: dict[str, DeploymentHealth] | None = None, **kw: Any
) -> RoutingDecision:
    rotation = kw.pop("rotation", 0)
    seed = kw.pop("seed", 0)
    return route(
        RoutingRequest(kw.pop("request", REQ), **kw),
        catalog,
        lookup(health or {}),
        now=NOW,
        rng=random.Random(seed),
        rotation=rotation,
    )


def names(decision: RoutingDecision) -> list[str]:
    return [c.deployment.name for c in decision.candidates]


def test_default_strategy_is_cost_and_picks_the_cheapest() -> None:
    decision = decide()
    assert decision.strategy == "cost"
    assert names(decision) == ["d/cheap", "d/mid", "d/top"]
    costs = [c.estimated_cost_usd for c in decision.candidates]
    assert costs == sorted(costs) and costs[0] > 0
    assert decision.candidates[0].score == 1.0 and decision.candidates[-1].score == 0.0
    assert decision.retry_at is None and decision.excluded == ()


def test_quality_picks_the_best_and_breaks_ties_on_cost() -> None:
    assert names(decide(strategy="quality")) == ["d/top", "d/mid", "d/cheap"]
    tied = make_catalog(
        [model("a-dear", inp="3", out="9", quality=80), model("b-cheap", inp="1", out="2", quality=80)]
    )
    assert names(decide(tied, strategy="quality")) == ["d/b-cheap", "d/a-dear"]


def test_balanced_weights_flip_the_choice() -> None:
    two = make_catalog(
        [model("cheap", inp="0.1", out="0.4", quality=50), model("top", inp="5", out="20", quality=90)]
    )
    assert names(decide(two, strategy="balanced", cost_weight=0.9))[0] == "d/cheap"
    assert names(decide(two, strategy="balanced", cost_weight=0.1))[0] == "d/top"
    # "mid" is nearly as good as top at a fifth of the price: the default 0.6 picks it.
    decision = decide(strategy="balanced")
    assert names(decision)[0] == "d/mid"
    assert "x cost" in decision.candidates[0].detail


def test_performance_uses_observed_latency_then_the_catalogs() -> None:
    assert names(decide(strategy="performance")) == ["d/cheap", "d/mid", "d/top"]
    observed = {
        "d/top": DeploymentHealth(latency_ewma_ms=150.0, samples=20),
        "d/cheap": DeploymentHealth(latency_ewma_ms=3000.0, samples=20),
        "d/mid": DeploymentHealth(latency_ewma_ms=50.0, samples=0),  # no samples: catalog's 900 ms
    }
    decision = decide(health=observed, strategy="performance")
    assert names(decision) == ["d/top", "d/mid", "d/cheap"]
    assert "observed" in decision.candidates[0].detail and "catalog" in decision.candidates[1].detail


def test_round_robin_rotates_strictly_over_names() -> None:
    firsts = [names(decide(strategy="round_robin", rotation=r))[0] for r in range(7)]
    assert firsts == ["d/cheap", "d/mid", "d/top", "d/cheap", "d/mid", "d/top", "d/cheap"]
    assert names(decide(strategy="round_robin", rotation=4)) == ["d/mid", "d/top", "d/cheap"]
    # An excluded deployment drops out of the rotation rather than stalling it.
    assert names(decide(strategy="round_robin", rotation=1, exclude=frozenset({"d/mid"}))) == [
        "d/top",
        "d/cheap",
    ]


def test_manual_is_the_model_then_its_fallbacks_in_order() -> None:
    decision = decide(model="top", fallbacks=("d/cheap", "mid", "top"))
    assert decision.strategy == "manual"
    assert names(decision) == ["d/top", "d/cheap", "d/mid"]  # duplicates kept once, first place
    assert [c.score for c in decision.candidates] == [1.0, 0.5, pytest.approx(1 / 3, abs=1e-6)]
    assert names(decide(model="d/mid")) == ["d/mid"]  # a deployment name works as well


def test_model_with_an_automatic_strategy_ranks_only_the_named_ones() -> None:
    assert names(decide(model="top", fallbacks=("mid",), strategy="cost")) == ["d/mid", "d/top"]


def test_unknown_model_strategy_and_manual_without_model() -> None:
    with pytest.raises(UnknownModel, match="nope"):
        decide(model="nope")
    with pytest.raises(UnknownModel, match="gone"):
        decide(model="top", fallbacks=("gone",))
    with pytest.raises(UnknownStrategy) as err:
        decide(strategy="fastest")
    for known in ("balanced", "cost", "manual", "performance", "quality", "round_robin"):
        assert known in str(err.value)
    with pytest.raises(RoutingError, match="manual"):
        decide(strategy="manual")


def test_weighted_load_balancing_across_deployments_of_one_model() -> None:
    catalog = make_catalog(
        [model("m", inp="1", out="2", quality=70), model("other", inp="9", out="9", quality=70)],
        [
            {"name": "east", "model": "m", "weight": 3},
            {"name": "west", "model": "m", "weight": 1},
            {"name": "far", "model": "other"},
        ],
    )
    rng = random.Random(42)
    firsts: Counter[str] = Counter()
    for _ in range(4000):
        decision = route(RoutingRequest(REQ), catalog, now=NOW, rng=rng)
        assert names(decision)[2] == "far"  # cost still ranks across models
        firsts[names(decision)[0]] += 1
    assert firsts["east"] / 4000 == pytest.approx(0.75, abs=0.03)
    # Same seed, same order: load balancing is reproducible.
    assert names(decide(catalog, seed=7)) == names(decide(catalog, seed=7))
    # Manual load-balances within the asked model too.
    manual_firsts = Counter(names(decide(catalog, model="m", seed=s))[0] for s in range(400))
    assert manual_firsts["east"] > manual_firsts["west"] > 0


def test_explanation_is_json_and_names_scores_and_exclusions() -> None:
    decision = decide(strategy="quality", min_quality=60)
    data = json.loads(json.dumps(decision.explanation()))
    assert data["strategy"] == "quality"
    assert [c["deployment"] for c in data["candidates"]] == ["d/top", "d/mid"]
    assert data["candidates"][0]["score"] == 0.9
    assert data["excluded"] == [
        {
            "deployment": "d/cheap",
            "model": "cheap",
            "filter": "quality",
            "reason": "quality: 50 < min_quality 60",
        }
    ]


def test_every_strategy_routes_the_default_catalog() -> None:
    catalog = get_catalog()
    for name in STRATEGIES:
        kw: dict[str, Any] = {"model": "gpt-4o-mini"} if name == "manual" else {}
        decision = decide(catalog, strategy=name, **kw)
        assert decision.candidates, name
    assert names(decide(catalog))[0] == "ollama/llama3.2"  # free wins on cost
    assert names(decide(catalog, strategy="quality"))[0] == "anthropic/claude-sonnet-4-6"


def test_a_deployment_ramping_back_keeps_its_rank_for_its_share_of_jobs() -> None:
    ramping = {"d/cheap": DeploymentHealth(traffic_share=0.25)}
    firsts = Counter(names(decide(health=ramping, seed=seed))[0] for seed in range(2000))
    assert 0.21 < firsts["d/cheap"] / 2000 < 0.29  # its share, give or take the draw
    assert firsts["d/mid"] == 2000 - firsts["d/cheap"]  # the rest go to the next in rank
    deferred = next(
        d for d in (decide(health=ramping, seed=s) for s in range(50)) if names(d)[0] != "d/cheap"
    )
    assert names(deferred) == ["d/mid", "d/top", "d/cheap"]  # still a fallback, last
    assert "ramping back" in deferred.candidates[-1].detail
    assert names(decide(health={"d/cheap": DeploymentHealth()})) == ["d/cheap", "d/mid", "d/top"]


def test_ramping_keeps_a_manual_jobs_model_and_leaves_round_robin_alone() -> None:
    catalog = make_catalog(
        [model("m1", inp="1", out="1", quality=70), model("m2", inp="1", out="1", quality=70)],
        [{"name": "m1/a", "model": "m1"}, {"name": "m1/b", "model": "m1"}, {"name": "m2/c", "model": "m2"}],
    )
    ramping = {"m1/a": DeploymentHealth(traffic_share=0.0)}
    for seed in range(20):
        manual = decide(catalog, ramping, model="m1", fallbacks=("m2",), strategy="manual", seed=seed)
        assert names(manual) == ["m1/b", "m1/a", "m2/c"]  # gives way to its twin, not to m2
    alone = decide(catalog, ramping, model="m1/a", fallbacks=("m2",), strategy="manual")
    assert names(alone) == ["m1/a", "m2/c"]  # no twin: the client's choice stands
    rotated = {names(decide(catalog, ramping, strategy="round_robin", rotation=r))[0] for r in range(3)}
    assert rotated == {"m1/a", "m1/b", "m2/c"}  # the rotation is not bent
