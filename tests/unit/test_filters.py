"""Hard filters before ranking: capabilities, streaming, context window, max output, quality
floor, cost ceiling, owner budget, failover exclusion and open breakers (retry_at)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from core.types import ChatRequest
from routing.breaker import DeploymentHealth
from routing.catalog import Catalog, catalog_from_dict
from routing.filters import FILTERS
from routing.router import route
from routing.tokens import count_request_tokens
from routing.types import HealthLookup, NoRoute, RoutingDecision, RoutingRequest, UnknownModel

NOW = 1_700_000_000.0


def model(mid: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": mid,
        "provider": "openai",
        "context_window": 128_000,
        "max_output_tokens": 16_384,
        "input_price": "1.00",
        "output_price": "4.00",
        "capabilities": ["tools", "vision", "json_mode", "streaming"],
        "quality": 70,
    }
    return {**base, **kw}


def make_catalog(*models: dict[str, Any]) -> Catalog:
    return catalog_from_dict(
        {"models": list(models), "deployments": [{"name": m["id"], "model": m["id"]} for m in models]}
    )


CATALOG = make_catalog(
    model("big", context_window=1_000_000, quality=80, input_price="2.00"),
    model("small", context_window=8_000, max_output_tokens=2_000, input_price="0.10", output_price="0.40"),
    model("plain", capabilities=["json_mode"], quality=40, input_price="0.05", output_price="0.10"),
)


def ask(text: str = "Hello there, please answer briefly.", **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def decide(
    request: ChatRequest | None = None, health: dict[str, DeploymentHealth] | None = None, **kw: Any
) -> RoutingDecision:
    return route(
        RoutingRequest(request or ask(), **kw), CATALOG, lookup(health or {}), now=NOW, rng=random.Random(0)
    )


def excluded(decision: RoutingDecision) -> dict[str, str]:
    return {e.deployment: e.reason for e in decision.excluded}


def test_filters_are_small_named_functions_with_breaker_last() -> None:
    assert list(FILTERS)[-1] == "breaker"
    assert {"capabilities", "context", "max_output", "quality", "cost_ceiling", "budget", "failover"} <= set(
        FILTERS
    )


def test_required_capabilities_and_streaming() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    decision = decide(ask(tools=tools))
    assert [c.deployment.name for c in decision.candidates] == ["small", "big"]
    assert excluded(decision) == {"plain": "capabilities: request needs tools; model lacks tools"}
    assert "plain" in excluded(decide(stream=True))
    assert "lacks streaming" in excluded(decide(stream=True))["plain"]
    assert "plain" not in excluded(decide(ask(response_format={"type": "json_object"})))


def test_context_filter_skips_a_small_window_fallback() -> None:
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 1000  # ~10k tokens
    request = ask(long_prompt, max_tokens=1_000)
    n_in = count_request_tokens(request, "openai")
    assert n_in > 8_000
    decision = decide(request, model="small", fallbacks=("big",))
    assert [c.deployment.name for c in decision.candidates] == ["big"]
    assert excluded(decision) == {"small": f"context: {n_in} input + 1000 max_tokens > 8000 window"}
    # Without max_tokens the expected output length is what must fit.
    reason = excluded(decide(ask(long_prompt), model="small", fallbacks=("big",)))["small"]
    assert reason.startswith("context: ") and "expected output > 8000 window" in reason


def test_max_tokens_above_the_models_max_output() -> None:
    reason = excluded(decide(ask(max_tokens=4_000)))["small"]
    assert reason == "max_output: 4000 max_tokens > 2000 max output tokens"


def test_quality_floor_cost_ceiling_and_budget_reasons_in_no_route() -> None:
    with pytest.raises(NoRoute) as err:
        decide(model="small", fallbacks=("plain",), min_quality=75)
    assert "small (small): quality: 70 < min_quality 75" in str(err.value)
    assert "plain (plain): quality: 40 < min_quality 75" in str(err.value)
    assert {e.filter for e in err.value.exclusions} == {"quality"}

    cheapest = decide(strategy="cost").candidates[0]
    ceiling = cheapest.estimated_cost_usd - Decimal("0.00000001")
    with pytest.raises(NoRoute) as err:
        decide(max_cost_usd=ceiling)
    assert f"estimate ${cheapest.estimated_cost_usd:f} > max_cost_usd ${ceiling:f}" in str(err.value)
    assert len(err.value.exclusions) == 3

    with pytest.raises(NoRoute, match=r"budget: estimate \$[0-9.]+ > remaining budget \$0\.00000000"):
        decide(budget_remaining_usd=Decimal("0.00000000"))
    # A budget that covers only the cheapest leaves only it.
    only = decide(budget_remaining_usd=cheapest.estimated_cost_usd)
    assert [c.deployment.name for c in only.candidates] == [cheapest.deployment.name]
    assert all(r.startswith("budget: ") for r in excluded(only).values())


def test_failover_exclusion() -> None:
    decision = decide(exclude=frozenset({"plain", "small"}))
    assert [c.deployment.name for c in decision.candidates] == ["big"]
    assert excluded(decision)["plain"] == "failover: already tried for this job"
    # Its only candidate failed over for good (a lasting failure): nothing is left.
    with pytest.raises(NoRoute, match="already tried"):
        decide(model="big", exclude=frozenset({"big"}), lasting_exclude=frozenset({"big"}))


def test_open_breakers_give_retry_at_instead_of_no_route() -> None:
    health = {
        "big": DeploymentHealth(breaker="open", open_until=NOW + 30),
        "small": DeploymentHealth(breaker="open", open_until=NOW + 10),
    }
    decision = decide(health=health, exclude=frozenset({"plain"}))
    assert decision.candidates == ()
    assert decision.retry_at == NOW + 10
    assert excluded(decision)["small"] == f"breaker: open until {NOW + 10:.3f} (10.0 s from now)"
    # One healthy candidate left: no waiting.
    decision = decide(health=health)
    assert [c.deployment.name for c in decision.candidates] == ["plain"] and decision.retry_at is None
    # Breaker-blocked plus excluded for good reasons: still worth waiting for the breaker.
    decision = decide(health=health, min_quality=50)
    assert decision.candidates == () and decision.retry_at == NOW + 10


def test_half_open_and_elapsed_breakers_stay_eligible() -> None:
    health = {
        "big": DeploymentHealth(breaker="half_open", open_until=NOW - 1),
        "small": DeploymentHealth(breaker="open", open_until=NOW),  # cooldown just ended
    }
    decision = decide(health=health)
    assert {c.deployment.name for c in decision.candidates} == {"big", "small", "plain"}


def test_no_route_when_breaker_is_not_the_only_reason() -> None:
    health = {"big": DeploymentHealth(breaker="open", open_until=NOW + 30)}
    with pytest.raises(NoRoute) as err:
        decide(health=health, min_quality=99)
    assert {e.filter for e in err.value.exclusions} == {"quality"}  # first failing filter wins


def test_route_asks_health_for_its_pool_only() -> None:
    asked: list[list[str]] = []
    open_plain = {"plain": DeploymentHealth(breaker="open", open_until=NOW + 5), "big": DeploymentHealth()}

    def health(names: Iterable[str]) -> Mapping[str, DeploymentHealth]:
        asked.append(list(names))
        return open_plain

    route(RoutingRequest(ask()), CATALOG, health, now=NOW, rng=random.Random(0))
    pinned = RoutingRequest(ask(), model="plain", fallbacks=("big",), strategy="manual")
    decision = route(pinned, CATALOG, health, now=NOW, rng=random.Random(0))
    assert asked == [["big", "small", "plain"], ["plain", "big"]]
    # Health for just those is all route needs: an open breaker on the pinned one still counts.
    assert [c.deployment.name for c in decision.candidates] == ["big"]
    with pytest.raises(UnknownModel):
        route(RoutingRequest(ask(), model="nope"), CATALOG, health, now=NOW, rng=random.Random(0))


def test_every_candidate_failed_over_goes_round_again_but_not_past_lasting_failures() -> None:
    everyone = frozenset({"big", "small", "plain"})
    again = route(RoutingRequest(ask(), exclude=everyone), CATALOG, now=NOW, rng=random.Random(0))
    assert {c.deployment.name for c in again.candidates} == everyone
    lasting = route(
        RoutingRequest(ask(), exclude=everyone, lasting_exclude=frozenset({"big"})),
        CATALOG,
        now=NOW,
        rng=random.Random(0),
    )
    assert {c.deployment.name for c in lasting.candidates} == {"small", "plain"}
    with pytest.raises(NoRoute):
        route(
            RoutingRequest(ask(), exclude=everyone, lasting_exclude=everyone),
            CATALOG,
            now=NOW,
            rng=random.Random(0),
        )


def lookup(snapshot: Mapping[str, DeploymentHealth]) -> HealthLookup:
    """A health lookup answering from a fixed snapshot."""
    return lambda names: {n: snapshot[n] for n in names if n in snapshot}


EMBEDDER = {
    "id": "embedder",
    "provider": "openai",
    "kind": "embedding",
    "dimensions": 1536,
    "max_input_tokens": 8191,
    "max_inputs_per_call": 2048,
    "input_price": "0.00",  # the cheapest of all: a cost ranking would pick it if it could
    "quality": 99,
}
MIXED = make_catalog(model("chat"), EMBEDDER)


def test_a_chat_job_never_routes_to_an_embedding_model() -> None:
    assert next(iter(FILTERS)) == "kind"
    for strategy in ("cost", "quality", "balanced", "performance", "round_robin"):
        decision = route(
            RoutingRequest(ask(), strategy=strategy), MIXED, lookup({}), now=NOW, rng=random.Random(0)
        )
        assert [c.deployment.name for c in decision.candidates] == ["chat"]
        assert decision.excluded == ()  # not in an automatic pool at all
    with pytest.raises(NoRoute) as info:
        route(RoutingRequest(ask(), model="embedder"), MIXED, lookup({}), now=NOW, rng=random.Random(0))
    assert [(e.filter, e.reason) for e in info.value.exclusions] == [
        ("kind", "kind: embedder is an embedding model; a chat job needs a chat model")
    ]
    fallback = route(
        RoutingRequest(ask(), model="chat", fallbacks=("embedder",)),
        MIXED,
        lookup({}),
        now=NOW,
        rng=random.Random(0),
    )
    assert [c.deployment.name for c in fallback.candidates] == ["chat"]
    assert excluded(fallback) == {
        "embedder": "kind: embedder is an embedding model; a chat job needs a chat model"
    }
