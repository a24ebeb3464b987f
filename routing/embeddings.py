"""Embedding jobs' pure parts: one model per corpus, calls planned within the model's limits,
their cost, and where each call may go.

- `embedding_inputs` counts each text once (o200k, `routing.tokens.count_text`); the count is
  kept raw and calibrated for the model's provider when a call is planned, as chat counts are.
- `plan_calls` packs inputs, in their order, into as few provider calls as the model's
  `max_inputs_per_call` and `max_tokens_per_call` allow (greedy packing of a sequence is
  optimal for limits that add up), refusing an input longer than `max_input_tokens` by its id.
- `embedding_cost` settles a call's cost from its usage, `estimate_embedding_cost` a plan's,
  in Decimal USD quantized as `routing/costs.py` does.
- `corpus_model` refuses a corpus naming more than one model (`MixedModels`): vectors of two
  models live in two spaces and cannot be compared.
- `route_embedding` is the same-model rule: an embedding job names its model or one of its
  deployments, and its calls fail over only between that model's deployments (the named
  deployment first, then the others, load-balanced by weight), never to another model. Like
  `routing.router.route` it is a pure function returning a `RoutingDecision`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from core.embeddings import EmbeddingRequest, InputType
from core.types import Usage
from routing.breaker import DeploymentHealth, breaker_blocks
from routing.catalog import Catalog, Deployment, ModelKind, ModelSpec
from routing.costs import MILLION, QUANTUM
from routing.filters import BREAKER, CONFIGURED
from routing.router import ramp_back
from routing.strategies import weighted_shuffle
from routing.tokens import calibrate, count_text
from routing.types import (
    Candidate,
    Exclusion,
    HealthLookup,
    MixedModels,
    NoRoute,
    RoutingDecision,
    Scored,
    UnknownModel,
    WrongModelKind,
    no_health,
)

SAME_MODEL = "same_model"  # the strategy name an embedding decision reports


class EmbeddingPlanError(ValueError):
    """The inputs cannot be planned into calls; `input_id` names the input at fault, if one is."""

    def __init__(self, message: str, input_id: str | None = None) -> None:
        super().__init__(message)
        self.input_id = input_id


@dataclass(frozen=True, slots=True)
class EmbeddingInput:
    """One text to embed, with the id its vector is returned under."""

    id: str
    text: str
    raw_tokens: int  # o200k count, before the provider's calibration


def embedding_inputs(items: Iterable[tuple[str, str]]) -> list[EmbeddingInput]:
    """(id, text) pairs as inputs, each counted once."""
    return [EmbeddingInput(id_, text, count_text(text)) for id_, text in items]


@dataclass(frozen=True)
class PlannedCall:
    """One provider call's inputs, in order, and the tokens it is expected to bill."""

    inputs: tuple[EmbeddingInput, ...]
    tokens: int  # calibrated for the model's provider

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.inputs]

    @property
    def texts(self) -> list[str]:
        return [item.text for item in self.inputs]

    def request(
        self, *, dimensions: int | None = None, input_type: InputType | None = None
    ) -> EmbeddingRequest:
        """The adapter's request for this call; `vectors[i]` of its answer belongs to `ids[i]`."""
        return EmbeddingRequest(
            inputs=self.texts,
            dimensions=dimensions,
            input_type=input_type,
            counted_tokens=sum(item.raw_tokens for item in self.inputs),
        )


def _require_embedding(model: ModelSpec) -> None:
    if model.kind is not ModelKind.EMBEDDING:
        raise WrongModelKind(f"{model.id!r} is a {model.kind.value} model: only an embedding model embeds")


def plan_calls(inputs: Sequence[EmbeddingInput], model: ModelSpec) -> list[PlannedCall]:
    """The inputs packed, in order, into the fewest calls `model`'s per-call limits allow."""
    _require_embedding(model)
    assert model.max_inputs_per_call is not None and model.max_input_tokens is not None  # the catalog's
    max_inputs, per_call = model.max_inputs_per_call, model.max_tokens_per_call
    # An input must fit a call on its own, too.
    limit = min(model.max_input_tokens, per_call) if per_call is not None else model.max_input_tokens
    calls: list[PlannedCall] = []
    current: list[EmbeddingInput] = []
    current_tokens = 0
    seen: set[str] = set()
    for item in inputs:
        if item.id in seen:
            raise EmbeddingPlanError(
                f"input id {item.id!r} appears twice: each input needs its own id", item.id
            )
        seen.add(item.id)
        if not item.text:
            raise EmbeddingPlanError(f"input {item.id!r} is empty: every input needs some text", item.id)
        tokens = calibrate(item.raw_tokens, model.provider)
        if tokens > limit:
            raise EmbeddingPlanError(
                f"input {item.id!r} has about {tokens} tokens, over {model.id}'s limit of {limit} per "
                "input: split it first (routing.chunking.chunk_text)",
                item.id,
            )
        full = len(current) == max_inputs or (per_call is not None and current_tokens + tokens > per_call)
        if current and full:
            calls.append(PlannedCall(tuple(current), current_tokens))
            current, current_tokens = [], 0
        current.append(item)
        current_tokens += tokens
    if current:
        calls.append(PlannedCall(tuple(current), current_tokens))
    return calls


def embedding_cost(model: ModelSpec, usage: Usage) -> Decimal:
    """What an embedding call with this usage cost: its input tokens at the input price."""
    cost = Decimal(usage.input_tokens) * model.input_price / MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def estimate_embedding_cost(model: ModelSpec, calls: Iterable[PlannedCall]) -> Decimal:
    """What a plan is expected to cost: the sum of its calls' settled costs at their estimates."""
    return sum((embedding_cost(model, Usage(input_tokens=call.tokens)) for call in calls), Decimal(0))


def embedding_model_of(name: str, catalog: Catalog) -> tuple[ModelSpec, Deployment | None]:
    """The embedding model `name` designates (a model id or a deployment name) and the deployment
    when it names one. UnknownModel, or WrongModelKind for a chat model, name the choices."""
    deployment = catalog.deployment(name)
    model = deployment.model if deployment is not None else catalog.model(name)
    if model is None:
        raise UnknownModel(f"unknown model or deployment {name!r}: not in catalog {catalog.source}")
    if model.kind is not ModelKind.EMBEDDING:
        choices = sorted(m.id for m in catalog.models.values() if m.kind is ModelKind.EMBEDDING)
        raise WrongModelKind(
            f"{name!r} is a {model.kind.value} model; embeddings need an embedding model: "
            f"{', '.join(choices) or 'the catalog has none'}"
        )
    return model, deployment


def corpus_model(names: Iterable[str], catalog: Catalog) -> ModelSpec:
    """The one embedding model a corpus's inputs name; MixedModels when they name several."""
    named: dict[str, list[str]] = {}
    models: dict[str, ModelSpec] = {}
    for name in names:
        model, _ = embedding_model_of(name, catalog)
        models[model.id] = model
        if name not in named.setdefault(model.id, []):
            named[model.id].append(name)
    if not models:
        raise UnknownModel("no embedding model named: give the corpus a model")
    if len(models) > 1:
        listed = "; ".join(f"{model_id} (as {', '.join(map(repr, via))})" for model_id, via in named.items())
        raise MixedModels(
            f"a corpus must be embedded with one model, so its vectors share one space; it names "
            f"{len(models)}: {listed}"
        )
    return next(iter(models.values()))


def route_embedding(
    name: str,
    catalog: Catalog,
    health: HealthLookup = no_health,
    *,
    now: float,
    rng: random.Random,
    raw_tokens: int = 0,
    exclude: frozenset[str] = frozenset(),
    lasting_exclude: frozenset[str] = frozenset(),
    unavailable: Mapping[str, str] | None = None,
) -> RoutingDecision:
    """Rank the deployments an embedding call naming `name` may go to: only its model's.

    `raw_tokens` is the call's o200k count (for the candidates' estimates); `exclude` the
    deployments the job already failed over from, `lasting_exclude` those of them a second round
    cannot cure (as for `routing.router.route`); `unavailable` those this environment cannot
    call, with what to set (`routing.credentials`). Raises UnknownModel, WrongModelKind, or
    NoRoute when every deployment of the model is excluded for a reason other than an open
    breaker; when only breakers stand in the way, returns no candidates and `retry_at`.
    """
    model, named = embedding_model_of(name, catalog)
    tokens = calibrate(raw_tokens, model.provider)
    cost = embedding_cost(model, Usage(input_tokens=tokens))
    pool = [
        Scored(d, tokens, 0, cost, 0 if named is None or d.name == named.name else 1)
        for d in catalog.deployments_of(model.id)
    ]
    snapshot = health(s.name for s in pool)
    missing = unavailable or {}
    try:
        return _rank(pool, snapshot, now, rng, exclude, missing)
    except NoRoute:
        if not exclude - lasting_exclude:
            raise
        return _rank(pool, snapshot, now, rng, lasting_exclude, missing)


def _rank(
    pool: list[Scored],
    snapshot: Mapping[str, DeploymentHealth],
    now: float,
    rng: random.Random,
    exclude: frozenset[str],
    unavailable: Mapping[str, str],
) -> RoutingDecision:
    eligible: list[Scored] = []
    excluded: list[Exclusion] = []
    for s in pool:
        h = snapshot.get(s.name)
        if s.name in unavailable:
            reason = f"not configured: {unavailable[s.name]}"
            excluded.append(Exclusion(s.name, s.model_id, reason, CONFIGURED))
        elif s.name in exclude:
            excluded.append(Exclusion(s.name, s.model_id, "failover: already tried for this job", "failover"))
        elif breaker_blocks(h, now):
            assert h is not None and h.open_until is not None
            reason = f"breaker: open until {h.open_until:.3f} ({h.open_until - now:.1f} s from now)"
            excluded.append(Exclusion(s.name, s.model_id, reason, BREAKER))
        else:
            eligible.append(s)
    if not eligible:
        waits = [snapshot[e.deployment].open_until for e in excluded if e.filter == BREAKER]
        retry_at = min((t for t in waits if t is not None), default=None)
        if retry_at is None:
            raise NoRoute(tuple(excluded))
        return RoutingDecision(SAME_MODEL, (), tuple(excluded), retry_at)
    candidates: list[Candidate] = []
    for group in (0, 1):
        label = "asked for" if group == 0 else "failover: same model"
        for s in weighted_shuffle([s for s in eligible if s.group == group], rng):
            detail = f"{label}; estimate ${s.estimated_cost_usd:f} ({s.input_tokens} tokens)"
            candidates.append(
                Candidate(s.deployment, 1 / (1 + group), s.estimated_cost_usd, s.input_tokens, detail)
            )
    return RoutingDecision(
        SAME_MODEL, tuple(ramp_back(candidates, snapshot, rng, "model")), tuple(excluded), None
    )
