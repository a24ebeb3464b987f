"""The routing engine: which deployments may serve a job, in which order, and why.

`route` is a pure function of the request, the catalog, the health snapshots, `now`, an
injected `random.Random` and the shared round-robin counter; it performs no I/O and reads
no clock. It builds the candidate pool (the whole catalog for an automatic strategy, the
asked model/deployment and the client's fallbacks for `manual`), drops what the hard
filters in `routing/filters.py` reject, and ranks the rest with a strategy from
`routing/strategies.py`. The dispatcher tries the candidates in order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from core.types import ChatRequest
from routing.catalog import Catalog, Deployment
from routing.filters import BREAKER, Exclusion, Scored, first_exclusion, score_deployments
from routing.health import DeploymentHealth
from routing.strategies import STRATEGIES, Candidate

__all__ = [
    "Candidate",
    "DeploymentHealth",
    "Exclusion",
    "NoRoute",
    "RoutingDecision",
    "RoutingError",
    "RoutingRequest",
    "UnknownModel",
    "UnknownStrategy",
    "resolve_strategy",
    "route",
]


@dataclass(frozen=True)
class RoutingRequest:
    request: ChatRequest
    model: str | None = None  # a catalog model id OR a deployment name the client asked for
    strategy: str | None = None  # None => "manual" when model is given, else "cost"
    fallbacks: tuple[str, ...] = ()  # the client's fallbacks (model ids or deployment names)
    cost_weight: float = 0.6  # balanced: weight of cost; quality weight = 1 - cost_weight
    min_quality: float | None = None  # per-job quality floor
    max_cost_usd: Decimal | None = None  # per-job cost ceiling (on the estimate)
    budget_remaining_usd: Decimal | None = None  # the owner's remaining budget
    exclude: frozenset[str] = frozenset()  # deployments already failed over for this job
    stream: bool = False  # the caller wants a streamed answer: requires "streaming"
    input_tokens: int | None = None  # the request's raw count when already counted (tokens.py)

    @classmethod
    def from_stored(
        cls,
        request: ChatRequest,
        *,
        model: str | None,
        strategy: str | None,
        options: Mapping[str, Any] | None,
        stream: bool,
        budget_remaining_usd: Decimal | None = None,
        exclude: frozenset[str] = frozenset(),
        input_tokens: int | None = None,
    ) -> RoutingRequest:
        """The request as a job stores it (`options`: fallbacks, cost_weight, min_quality,
        max_cost_usd as a string). The API checks a submission through this same path, so
        what it accepts is exactly what the dispatcher will route."""
        options = options or {}
        max_cost = options.get("max_cost_usd")
        return cls(
            request=request,
            model=model,
            strategy=strategy,
            fallbacks=tuple(options.get("fallbacks") or ()),
            cost_weight=float(options.get("cost_weight", 0.6)),
            min_quality=options.get("min_quality"),
            max_cost_usd=Decimal(str(max_cost)) if max_cost is not None else None,
            budget_remaining_usd=budget_remaining_usd,
            exclude=exclude,
            stream=stream,
            input_tokens=input_tokens,
        )


@dataclass(frozen=True)
class RoutingDecision:
    strategy: str
    candidates: tuple[Candidate, ...]  # ranked, best first
    excluded: tuple[Exclusion, ...]
    retry_at: float | None  # set when every otherwise-eligible deployment waits on an open breaker

    def explanation(self) -> dict[str, Any]:
        """A JSON-serializable account of the decision, for the job record and the API."""
        return {
            "strategy": self.strategy,
            "candidates": [
                {
                    "deployment": c.deployment.name,
                    "model": c.deployment.model.id,
                    "provider": c.deployment.provider,
                    "score": c.score,
                    "estimated_cost_usd": str(c.estimated_cost_usd),
                    "input_tokens": c.input_tokens,
                    "detail": c.detail,
                }
                for c in self.candidates
            ],
            "excluded": [
                {"deployment": e.deployment, "model": e.model, "filter": e.filter, "reason": e.reason}
                for e in self.excluded
            ],
            "retry_at": self.retry_at,
        }


class RoutingError(ValueError):
    """The request cannot be routed; the message says why."""


class UnknownStrategy(RoutingError):
    pass


class UnknownModel(RoutingError):
    pass


class NoRoute(RoutingError):
    """Every candidate was excluded by a hard filter (not merely by an open breaker)."""

    def __init__(self, exclusions: tuple[Exclusion, ...]) -> None:
        self.exclusions = exclusions
        why = "; ".join(f"{e.deployment} ({e.model}): {e.reason}" for e in exclusions)
        super().__init__(f"no deployment can serve this request: {why or 'no candidates'}")


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
        return [(dep, 0) for dep in catalog.deployments.values()]
    names = (req.model, *req.fallbacks) if req.model else req.fallbacks
    seen: set[str] = set()
    pool: list[tuple[Deployment, int]] = []
    for group, name in enumerate(names):
        for dep in _resolve_name(name, catalog):
            if dep.name not in seen:
                seen.add(dep.name)
                pool.append((dep, group))
    return pool


def deployments_considered(req: RoutingRequest, catalog: Catalog) -> list[str]:
    """The deployments `route` looks at for `req` (a caller reads health for these only).
    Raises what `route` raises for an unknown strategy or model."""
    return [dep.name for dep, _ in _pool(req, catalog, resolve_strategy(req))]


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
    health: Mapping[str, DeploymentHealth],
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
    eligible: list[Scored] = []
    excluded: list[Exclusion] = []
    for scored in score_deployments(_pool(req, catalog, name), req):
        exclusion = first_exclusion(scored, req, health, now)
        if exclusion is None:
            eligible.append(scored)
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
