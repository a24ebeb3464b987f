"""Routing's vocabulary: what is asked (`RoutingRequest`), what is weighed (`Scored`), what is
ranked (`Candidate`), what is left out and why (`Exclusion`), what is decided
(`RoutingDecision`), and how routing says no (the `RoutingError` family).

    RoutingError            the request cannot be routed; the message says why
    ├── UnknownStrategy     no strategy of that name
    ├── UnknownModel        no model or deployment of that name in the catalog
    ├── WrongModelKind      an embedding job naming a chat model (chat jobs: the `kind` filter)
    ├── MixedModels         one corpus naming more than one embedding model
    └── NoRoute             every candidate was excluded by a hard filter

Every other routing module imports these from here, and nothing in here imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from core.types import ChatRequest
from routing.breaker import DeploymentHealth
from routing.catalog import Deployment

# Health for the named deployments, read when routing knows which it will weigh (a deployment
# never seen is healthy). The dispatcher reads Redis; a preview passes `no_health`.
HealthLookup = Callable[[Iterable[str]], Mapping[str, DeploymentHealth]]


def no_health(names: Iterable[str]) -> Mapping[str, DeploymentHealth]:
    """The lookup for a decision made without health (a submission's check, a preview)."""
    return {}


class RoutableJob(Protocol):
    """What a job stores that routing reads: the API checks a submission through the very row it
    will store, and the dispatcher routes that row, so both ask routing the same question."""

    @property
    def request(self) -> dict[str, Any]: ...
    @property
    def model_requested(self) -> str | None: ...
    @property
    def strategy(self) -> str | None: ...
    @property
    def routing(self) -> dict[str, Any]: ...
    @property
    def stream(self) -> bool: ...
    @property
    def request_tokens(self) -> int | None: ...


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
    # Of those, the ones whose failure a second round cannot cure (a missing or rejected key, a
    # window too small): excluded even when routing goes round the candidates again.
    lasting_exclude: frozenset[str] = frozenset()
    # Deployments nothing can call from here (no key, no endpoint), each with what to set.
    unavailable: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False  # the caller wants a streamed answer: requires "streaming"
    input_tokens: int | None = None  # the request's raw count when already counted (tokens.py)

    @classmethod
    def for_job(
        cls,
        job: RoutableJob,
        *,
        request: ChatRequest | None = None,
        budget_remaining_usd: Decimal | None = None,
        exclude: frozenset[str] = frozenset(),
        lasting: frozenset[str] = frozenset(),
        unavailable: Mapping[str, str] | None = None,
    ) -> RoutingRequest:
        """The one way a job becomes a routing question, at submission and at dispatch.
        `request` is the job's request already parsed, when the caller has it; `exclude` the
        deployments the job failed over from, `lasting` those of them a second round cannot
        cure (see `route`)."""
        options = job.routing or {}
        max_cost = options.get("max_cost_usd")
        return cls(
            request=request if request is not None else ChatRequest.model_validate(job.request),
            model=job.model_requested,
            strategy=job.strategy,
            fallbacks=tuple(options.get("fallbacks") or ()),
            cost_weight=float(options.get("cost_weight", 0.6)),
            min_quality=options.get("min_quality"),
            max_cost_usd=Decimal(str(max_cost)) if max_cost is not None else None,
            budget_remaining_usd=budget_remaining_usd,
            exclude=exclude,
            lasting_exclude=lasting,
            unavailable=unavailable or {},
            stream=bool(job.stream),
            input_tokens=job.request_tokens,
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


@dataclass(frozen=True)
class Scored:
    """A deployment with its request-specific estimates. `group` orders manual fallbacks."""

    deployment: Deployment
    input_tokens: int
    output_tokens: int  # expected: max_tokens when given, else a typical answer length
    estimated_cost_usd: Decimal
    group: int = 0

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def model_id(self) -> str:
        return self.deployment.model.id


@dataclass(frozen=True)
class Exclusion:
    deployment: str
    model: str
    reason: str  # e.g. "context: 130000 input + 4000 max_tokens > 128000 window"
    filter: str = ""  # the filter's name: capabilities, context, budget, breaker, ...


@dataclass(frozen=True)
class Candidate:
    deployment: Deployment
    score: float
    estimated_cost_usd: Decimal
    input_tokens: int
    detail: str


class RoutingError(ValueError):
    """The request cannot be routed; the message says why."""


class UnknownStrategy(RoutingError):
    pass


class UnknownModel(RoutingError):
    pass


class WrongModelKind(RoutingError):
    pass


class MixedModels(RoutingError):
    """A corpus must stay in one vector space: its inputs named more than one embedding model."""


class NoRoute(RoutingError):
    """Every candidate was excluded by a hard filter (not merely by an open breaker)."""

    def __init__(self, exclusions: tuple[Exclusion, ...]) -> None:
        self.exclusions = exclusions
        why = "; ".join(f"{e.deployment} ({e.model}): {e.reason}" for e in exclusions)
        super().__init__(f"no deployment can serve this request: {why or 'no candidates'}")
