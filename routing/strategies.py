"""Routing strategies: each ranks the eligible deployments for one request, best first.

A strategy is one small function registered by name in `STRATEGIES`. It gets the deployments
that passed every hard filter, the routing request, the health snapshots, an injected
`random.Random` and the shared round-robin counter, and returns ranked `Candidate`s. Scores
are in [0, 1], higher is better; `detail` says what the score was made of. Deployments of
the same model with equal rank are ordered by a weighted random draw on their `weight`
(load balancing); every other tie is broken by name, so results are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from typing import Any

from routing.breaker import DeploymentHealth
from routing.types import Candidate, RoutingRequest, Scored

Strategy = Callable[
    [list[Scored], RoutingRequest, Mapping[str, DeploymentHealth], random.Random, int], list[Candidate]
]
STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register a strategy under `name`."""

    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return register


def weighted_shuffle(items: Sequence[Scored], rng: random.Random) -> list[Scored]:
    """Order items by repeated weighted choice without replacement (weight = deployment weight)."""
    pool = list(items)
    out: list[Scored] = []
    while len(pool) > 1:
        total = sum(s.deployment.spec.weight for s in pool)
        pick = rng.random() * total
        for i, s in enumerate(pool):
            pick -= s.deployment.spec.weight
            if pick < 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return out + pool


def ranked(eligible: list[Scored], key: Callable[[Scored], Any], rng: random.Random) -> list[Scored]:
    """Sort by `key` (ascending), load-balancing same-model deployments whose keys are equal."""

    def group_key(s: Scored) -> tuple[Any, str]:
        return (key(s), s.model_id)

    ordered = sorted(eligible, key=lambda s: (key(s), s.model_id, s.name))
    out: list[Scored] = []
    for _, same in groupby(ordered, key=group_key):
        out.extend(weighted_shuffle(list(same), rng))
    return out


def closeness(value: float, best: float, worst: float) -> float:
    """1 at `best`, 0 at `worst`, linear in between (either direction); 1 when they are equal."""
    return 1.0 if best == worst else (worst - value) / (worst - best)


def _cost_detail(s: Scored) -> str:
    return f"estimate ${s.estimated_cost_usd:f} ({s.input_tokens} in + {s.output_tokens} out tokens)"


def _candidate(s: Scored, score: float, detail: str) -> Candidate:
    return Candidate(s.deployment, round(score, 6), s.estimated_cost_usd, s.input_tokens, detail)


@strategy("cost")
def cheapest(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """Lowest estimated cost first; score 1 for the cheapest down to 0 for the dearest."""
    costs = [float(s.estimated_cost_usd) for s in eligible]
    return [
        _candidate(s, closeness(float(s.estimated_cost_usd), min(costs), max(costs)), _cost_detail(s))
        for s in ranked(eligible, lambda s: s.estimated_cost_usd, rng)
    ]


def observed_latency(s: Scored, health: Mapping[str, DeploymentHealth]) -> tuple[float, str]:
    """The deployment's latency EWMA once calls were observed, else the catalog's typical latency."""
    h = health.get(s.name)
    if h is not None and h.samples > 0 and h.latency_ewma_ms is not None:
        return h.latency_ewma_ms, f"latency {h.latency_ewma_ms:.0f} ms (observed, {h.samples} samples)"
    return s.deployment.model.latency_ms, f"latency {s.deployment.model.latency_ms:.0f} ms (catalog)"


@strategy("performance")
def fastest(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """Lowest latency first (ties: cheaper); score 1 for the fastest down to 0 for the slowest."""
    latency = {s.name: observed_latency(s, health) for s in eligible}
    low, high = min(ms for ms, _ in latency.values()), max(ms for ms, _ in latency.values())
    return [
        _candidate(s, closeness(latency[s.name][0], low, high), latency[s.name][1])
        for s in ranked(eligible, lambda s: (latency[s.name][0], s.estimated_cost_usd), rng)
    ]


@strategy("quality")
def best(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """Highest catalog quality first (ties: cheaper); score = quality / 100."""
    return [
        _candidate(
            s, s.deployment.model.quality / 100, f"quality {s.deployment.model.quality:g}; {_cost_detail(s)}"
        )
        for s in ranked(eligible, lambda s: (-s.deployment.model.quality, s.estimated_cost_usd), rng)
    ]


@strategy("balanced")
def balanced(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """cost_weight * normalized cost (cheapest = 1) + (1 - cost_weight) * normalized quality (best = 1).

    Both are min-max normalized over the eligible set, so the weights trade the spread actually
    on offer for this request."""
    w = min(max(req.cost_weight, 0.0), 1.0)
    costs = [float(s.estimated_cost_usd) for s in eligible]
    quals = [s.deployment.model.quality for s in eligible]
    lo_c, hi_c, lo_q, hi_q = min(costs), max(costs), min(quals), max(quals)
    scores: dict[str, float] = {}
    details: dict[str, str] = {}
    for s in eligible:
        c = closeness(float(s.estimated_cost_usd), lo_c, hi_c)
        q = closeness(s.deployment.model.quality, hi_q, lo_q)
        scores[s.name] = round(w * c + (1 - w) * q, 9)
        details[s.name] = f"{w:g} x cost {c:.3f} + {1 - w:g} x quality {q:.3f}; {_cost_detail(s)}"
    return [
        _candidate(s, scores[s.name], details[s.name])
        for s in ranked(eligible, lambda s: (-scores[s.name], s.estimated_cost_usd), rng)
    ]


@strategy("round_robin")
def round_robin(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """Deployments sorted by name, rotated to start at `rotation % n` (a shared counter)."""
    ordered = sorted(eligible, key=lambda s: s.name)
    start = rotation % len(ordered)
    rotated = ordered[start:] + ordered[:start]
    n = len(rotated)
    return [_candidate(s, (n - i) / n, f"rotation {rotation} -> position {i}") for i, s in enumerate(rotated)]


@strategy("manual")
def manual(
    eligible: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    rotation: int,
) -> list[Candidate]:
    """The model or deployment asked for, then the client's fallbacks in their order."""
    names = (req.model, *req.fallbacks)
    out: list[Candidate] = []
    for _, same in groupby(sorted(eligible, key=lambda s: (s.group, s.name)), key=lambda s: s.group):
        group = list(same)
        label = "asked for" if group[0].group == 0 else f"fallback {group[0].group}"
        for s in weighted_shuffle(group, rng):
            out.append(_candidate(s, 1 / (1 + s.group), f"{label}: {names[s.group]}; {_cost_detail(s)}"))
    return out
