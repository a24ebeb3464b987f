"""Hard filters: which deployments may serve a request at all, and why the others may not.

`score_deployments` attaches to each deployment the facts every filter and strategy needs
(input tokens counted for its provider, expected output tokens, estimated cost). Each
filter is one small function returning a human-readable exclusion reason or None;
`first_exclusion` runs them in `FILTERS` order. The breaker filter runs last, so a
deployment it excludes is one that is *only* waiting for its cooldown.

The `kind` filter runs first: a chat job never goes to an embedding model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from routing.breaker import DeploymentHealth, breaker_blocks
from routing.catalog import Deployment, ModelKind
from routing.costs import estimate_cost, expected_output_tokens
from routing.tokens import calibrate, raw_request_tokens
from routing.types import Exclusion, RoutingRequest, Scored

BREAKER = "breaker"
BUDGET_FILTER = "budget"
CONFIGURED = "configured"  # routing.embeddings excludes unconfigured deployments under this name too


def score_deployments(pool: Iterable[tuple[Deployment, int]], req: RoutingRequest) -> list[Scored]:
    """Estimate tokens and cost of `req` on each (deployment, group). The request is counted
    once (or not at all when its count came with it), then calibrated per provider."""
    raw: int | None = req.input_tokens
    scored = []
    for dep, group in pool:
        if raw is None:
            raw = raw_request_tokens(req.request)
        n_in = calibrate(raw, dep.provider)
        n_out = expected_output_tokens(dep.model, req.request.max_tokens, n_in)
        scored.append(Scored(dep, n_in, n_out, estimate_cost(dep.model, n_in, n_out), group))
    return scored


Filter = Callable[[Scored, RoutingRequest, DeploymentHealth | None, float], str | None]
FILTERS: dict[str, Filter] = {}


def _filter(name: str) -> Callable[[Filter], Filter]:
    def register(fn: Filter) -> Filter:
        FILTERS[name] = fn
        return fn

    return register


def _usd(value: Decimal) -> str:
    return f"${value:f}"


@_filter("kind")
def model_kind(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    # Chat jobs only: embedding jobs are routed by `routing.embeddings.route_embedding`.
    kind = s.deployment.model.kind
    if kind is ModelKind.CHAT:
        return None
    return f"kind: {s.model_id} is an {kind.value} model; a chat job needs a chat model"


@_filter(CONFIGURED)
def configured(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    missing = req.unavailable.get(s.name)
    return f"not configured: {missing}" if missing else None


@_filter("failover")
def failed_over(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    return "failover: already tried for this job" if s.name in req.exclude else None


@_filter("capabilities")
def capabilities(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    needed = set(req.request.required_capabilities())
    if req.stream:
        needed.add("streaming")
    missing = sorted(needed - set(s.deployment.model.capabilities))
    if not missing:
        return None
    return f"capabilities: request needs {', '.join(sorted(needed))}; model lacks {', '.join(missing)}"


@_filter("max_output")
def max_output(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    max_tokens, limit = req.request.max_tokens, s.deployment.model.max_output_tokens
    if max_tokens is not None and max_tokens > limit:
        return f"max_output: {max_tokens} max_tokens > {limit} max output tokens"
    return None


@_filter("context")
def context(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    window = s.deployment.model.context_window
    max_tokens = req.request.max_tokens
    out, label = (
        (max_tokens, "max_tokens") if max_tokens is not None else (s.output_tokens, "expected output")
    )
    if s.input_tokens + out > window:
        return f"context: {s.input_tokens} input + {out} {label} > {window} window"
    return None


@_filter("quality")
def quality_floor(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    quality = s.deployment.model.quality
    if req.min_quality is not None and quality < req.min_quality:
        return f"quality: {quality:g} < min_quality {req.min_quality:g}"
    return None


@_filter("cost_ceiling")
def cost_ceiling(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    if req.max_cost_usd is not None and s.estimated_cost_usd > req.max_cost_usd:
        return f"cost_ceiling: estimate {_usd(s.estimated_cost_usd)} > max_cost_usd {_usd(req.max_cost_usd)}"
    return None


@_filter(BUDGET_FILTER)
def budget(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    remaining = req.budget_remaining_usd
    if remaining is not None and s.estimated_cost_usd > remaining:
        return f"budget: estimate {_usd(s.estimated_cost_usd)} > remaining budget {_usd(remaining)}"
    return None


@_filter(BREAKER)
def breaker(s: Scored, req: RoutingRequest, health: DeploymentHealth | None, now: float) -> str | None:
    if health is None or not breaker_blocks(health, now):
        return None
    assert health.open_until is not None
    return f"breaker: open until {health.open_until:.3f} ({health.open_until - now:.1f} s from now)"


def first_exclusion(
    s: Scored, req: RoutingRequest, health: Mapping[str, DeploymentHealth], now: float
) -> Exclusion | None:
    """The first filter that rejects `s`, as an Exclusion, or None when it is eligible."""
    h = health.get(s.name)
    for name, fn in FILTERS.items():
        reason = fn(s, req, h, now)
        if reason is not None:
            return Exclusion(s.name, s.model_id, reason, name)
    return None
