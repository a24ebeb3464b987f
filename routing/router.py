"""The routing engine: which deployments may serve a job, in which order, and why.

`route` is the one entry. It is a pure function of the request, the catalog, a health lookup,
`now`, an injected `random.Random` and the shared round-robin position; it performs no I/O of
its own and reads no clock. It builds the candidate pool once (the whole catalog for an
automatic strategy, the asked model/deployment and the client's fallbacks for `manual`),
asks the lookup for the health of that pool only, drops what the hard filters in
`routing/filters.py` reject, and ranks the rest with a strategy from `routing/strategies.py`.
When every candidate is excluded only because the job already failed over from it, routing
goes round again, skipping only the failures a second round cannot cure. The dispatcher
tries the candidates in order.

Chat jobs only: an automatic pool holds the chat models, and the `kind` filter refuses a named
embedding model. Embedding jobs are routed by `route_embedding` in `routing/embeddings.py`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from routing.breaker import DeploymentHealth
from routing.catalog import Catalog, Deployment, ModelKind
from routing.filters import BREAKER, first_exclusion, score_deployments
from routing.strategies import STRATEGIES
from routing.types import (
    Candidate,
    Exclusion,
    HealthLookup,
    NoRoute,
    RoutingDecision,
    RoutingError,
    RoutingRequest,
    Scored,
    UnknownModel,
    UnknownStrategy,
    no_health,
)

__all__ = ["resolve_strategy", "route"]


def resolve_strategy(req: RoutingRequest) -> str:
    """The strategy's registered name: the one asked for, else manual with a model, else cost."""
    name = req.strategy if req.strategy is not None else ("manual" if req.model else "cost")
    if name not in STRATEGIES:
        raise UnknownStrategy(f"unknown routing strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return name


def _resolve_name(name: str, catalog: Catalog) -> list[Deployment]:
    dep = catalog.deployment(name)
    if dep is not None:
        return [dep]
    if catalog.model(name) is not None:
        return catalog.deployments_of(name)
    raise UnknownModel(f"unknown model or deployment {name!r}: not in catalog {catalog.source}")


def _pool(req: RoutingRequest, catalog: Catalog, strategy: str) -> list[tuple[Deployment, int]]:
    """(deployment, group) pairs to consider; group is the position in (model, *fallbacks)."""
    if strategy == "manual" and not req.model:
        raise RoutingError("the manual strategy needs a model or deployment name")
    if not req.model and not req.fallbacks:
        # A chat job's automatic pool is the chat models; one naming an embedding model is
        # refused by the `kind` filter, with the reason.
        return [(dep, 0) for dep in catalog.deployments_of_kind(ModelKind.CHAT)]
    names = (req.model, *req.fallbacks) if req.model else req.fallbacks
    seen: set[str] = set()
    pool: list[tuple[Deployment, int]] = []
    for group, name in enumerate(names):
        for dep in _resolve_name(name, catalog):
            if dep.name not in seen:
                seen.add(dep.name)
                pool.append((dep, group))
    return pool


# Whom a deployment ramping back after a recovery gives way to, by strategy: a manual job's
# model is the client's choice, so only to other deployments of that model; round robin's
# rotation is its own policy, so to none. Every other strategy: to any candidate after it.
RAMP_SCOPE: dict[str, Literal["all", "model", "none"]] = {"manual": "model", "round_robin": "none"}


def ramp_back(
    candidates: list[Candidate],
    health: Mapping[str, DeploymentHealth],
    rng: random.Random,
    scope: Literal["all", "model", "none"] = "all",
) -> list[Candidate]:
    """A deployment ramping back after a recovery keeps its rank for its `traffic_share` of
    jobs; for the rest it goes behind the candidates after it (within `scope`), still a
    fallback."""
    if scope == "none":
        return list(candidates)
    order = list(candidates)
    for candidate in candidates:
        h = health.get(candidate.deployment.name)
        if h is None or h.traffic_share >= 1 or rng.random() < h.traffic_share:
            continue
        at = order.index(candidate)
        model = candidate.deployment.model.id
        behind = [
            i for i in range(at + 1, len(order)) if scope == "all" or order[i].deployment.model.id == model
        ]
        if not behind:
            continue
        order.pop(at)
        detail = f"{candidate.detail}; ramping back after a recovery ({h.traffic_share:.0%} of traffic)"
        order.insert(behind[-1], replace(candidate, detail=detail))
    return order


def route(
    req: RoutingRequest,
    catalog: Catalog,
    health: HealthLookup = no_health,
    *,
    now: float,
    rng: random.Random,
    rotation: int = 0,
) -> RoutingDecision:
    """Rank the deployments that may serve `req`.

    Raises UnknownStrategy, UnknownModel, or NoRoute when every candidate is excluded for
    a reason other than an open breaker. When the only obstacle is open breakers, returns a
    decision with no candidates and `retry_at` = the earliest time one of them may reopen.
    """
    name = resolve_strategy(req)
    scored = score_deployments(_pool(req, catalog, name), req)
    snapshot = health(s.name for s in scored)
    try:
        return _rank(name, scored, req, snapshot, now, rng, rotation)
    except NoRoute:
        if not req.exclude - req.lasting_exclude:
            raise
        # Every candidate has failed over once: go round again, now gated only by the breakers
        # (a cooled-down deployment gets another chance) and the failures that last.
        again = replace(req, exclude=req.lasting_exclude)
        return _rank(name, scored, again, snapshot, now, rng, rotation)


def _rank(
    name: str,
    scored: list[Scored],
    req: RoutingRequest,
    health: Mapping[str, DeploymentHealth],
    now: float,
    rng: random.Random,
    rotation: int,
) -> RoutingDecision:
    eligible: list[Scored] = []
    excluded: list[Exclusion] = []
    for candidate in scored:
        exclusion = first_exclusion(candidate, req, health, now)
        if exclusion is None:
            eligible.append(candidate)
        else:
            excluded.append(exclusion)
    if eligible:
        ranked = STRATEGIES[name](eligible, req, health, rng, rotation)
        candidates = ramp_back(ranked, health, rng, RAMP_SCOPE.get(name, "all"))
        return RoutingDecision(name, tuple(candidates), tuple(excluded), None)
    waits = [health[e.deployment].open_until for e in excluded if e.filter == BREAKER]
    retry_at = min((t for t in waits if t is not None), default=None)
    if retry_at is None:
        raise NoRoute(tuple(excluded))
    return RoutingDecision(name, (), tuple(excluded), retry_at)
