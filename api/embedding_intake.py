"""Accepting embeddings: the model checked, the inputs counted and packed into provider calls,
one queued job per call.

Every route that embeds comes through here (`POST /v1/embeddings`, `POST /v1/embeddings/jobs`,
document batches in embed mode, `/v1/embeddings` lines of an OpenAI batch), so each refuses the
same way: a model that is unknown (404 `model_not_found`), a chat model (400 `wrong_model_kind`),
two models in one corpus (400 `mixed_models`), a vector length the model does not make (400
`unsupported_dimensions`), an empty input or one past the model's per-input limit (400, `param`
naming the input), or an estimate the key's budget cannot cover (422 `budget_exceeded`).

`CallPacker` packs inputs as they come, in order, into the fewest calls the model's per-call
limits allow (`routing.embeddings.plan_calls`, over a window: packing a sequence greedily is
optimal, and a window gives the same calls as the whole while holding a few calls' inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from api.errors import ApiError
from api.job_intake import owner_budget
from core.embeddings import InputType
from jobstore.embedding_jobs import embedding_job_row, embedding_request, insert_jobs
from jobstore.models import ApiKey
from routing.catalog import Catalog, ModelSpec
from routing.embeddings import (
    EmbeddingInput,
    EmbeddingPlanError,
    PlannedCall,
    corpus_model,
    embedding_model_of,
    estimate_embedding_cost,
    plan_calls,
)
from routing.tokens import count_text
from routing.types import MixedModels, UnknownModel, WrongModelKind

# Inputs a packer holds before it plans, in calls' worth: the last planned call is kept back
# (more inputs may still join it), every call before it is final.
WINDOW_CALLS = 4


def embedding_model(name: str, catalog: Catalog, *, param: str = "model") -> ModelSpec:
    """The embedding model `name` designates (a model id or one of its deployments), or an ApiError."""
    try:
        model, _ = embedding_model_of(name, catalog)
    except UnknownModel as exc:
        raise ApiError(
            404, f"{exc} (GET /v1/models lists the embedding models)", param=param, code="model_not_found"
        ) from None
    except WrongModelKind as exc:
        raise ApiError(400, str(exc), param=param, code="wrong_model_kind") from None
    return model


def one_model(names: Iterable[str], catalog: Catalog, *, param: str = "model") -> ModelSpec:
    """The one embedding model these names designate; a 400 `mixed_models` when they name several."""
    names = list(names)
    for name in dict.fromkeys(names):
        embedding_model(name, catalog, param=param)
    try:
        return corpus_model(names, catalog)
    except MixedModels as exc:
        raise ApiError(400, str(exc), param=param, code="mixed_models") from None


def check_dimensions(model: ModelSpec, dimensions: int | None, *, param: str = "dimensions") -> None:
    if dimensions is None or model.supports_dimensions(dimensions):
        return
    options = model.dimension_options
    shorter = "any length up to it" if options == "any" else ", ".join(map(str, options)) or "none"
    raise ApiError(
        400,
        f"{model.id} cannot make vectors {dimensions} long: its vectors are {model.dimensions} long "
        f"(shorter ones it can make: {shorter})",
        param=param,
        code="unsupported_dimensions",
    )


def input_type_of(value: str | None, *, param: str = "input_type") -> InputType | None:
    if value is None:
        return None
    try:
        return InputType(value)
    except ValueError:
        raise ApiError(
            400,
            f"input_type must be one of {', '.join(t.value for t in InputType)}, not {value!r}",
            param=param,
            code="invalid_value",
        ) from None


@dataclass(frozen=True)
class Item:
    """One input with what its results need besides its id and text (document and offsets, ...)."""

    input: EmbeddingInput
    extra: Mapping[str, Any] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        return {"id": self.input.id, "text": self.input.text, "tokens": self.input.raw_tokens, **self.extra}


def item(input_id: str, text: str, *, tokens: int | None = None, **extra: Any) -> Item:
    """An input, counted once (pass `tokens` when the count is already known, as chunks' are)."""
    count = count_text(text) if tokens is None else tokens
    return Item(EmbeddingInput(input_id, text, count), extra)


def plan_error(exc: EmbeddingPlanError, param_of: Callable[[str | None], str | None]) -> ApiError:
    return ApiError(400, str(exc), param=param_of(exc.input_id), code="invalid_input")


@dataclass(frozen=True)
class Call:
    """A planned provider call with its inputs as the job stores them."""

    planned: PlannedCall
    items: tuple[Item, ...]


class CallPacker:
    """Packs items, in order, into calls within `model`'s per-call limits; `emit` gets each call
    as soon as it is final. EmbeddingPlanError for an input no call can carry (by its id)."""

    def __init__(self, model: ModelSpec, emit: Callable[[Call], None]) -> None:
        self.model = model
        self.emit = emit
        self.calls = 0
        self.inputs = 0
        self.estimate = Decimal(0)
        self._pending: list[Item] = []
        assert model.max_inputs_per_call is not None  # an embedding model's (the catalog checks)
        self._window = model.max_inputs_per_call * WINDOW_CALLS

    def add(self, items: Iterable[Item]) -> None:
        self._pending.extend(items)
        if len(self._pending) >= self._window:
            self._plan(final=False)

    def close(self) -> None:
        self._plan(final=True)

    def _plan(self, *, final: bool) -> None:
        if not self._pending:
            return
        planned = plan_calls([i.input for i in self._pending], self.model)
        keep = [] if final else planned[-1:]  # the last call may still grow
        done = planned[: len(planned) - len(keep)]
        start = 0
        for call in done:
            items = tuple(self._pending[start : start + len(call.inputs)])
            start += len(call.inputs)
            self.calls += 1
            self.inputs += len(items)
            self.estimate += estimate_embedding_cost(self.model, [call])
            self.emit(Call(call, items))
        self._pending = self._pending[start:]


def estimate(model: ModelSpec, calls: Iterable[Call]) -> Decimal:
    """What these calls are expected to cost, from their inputs' counts."""
    return estimate_embedding_cost(model, (c.planned for c in calls))


def pack_all(model: ModelSpec, items: Sequence[Item]) -> list[Call]:
    calls: list[Call] = []
    packer = CallPacker(model, calls.append)
    packer.add(items)
    packer.close()
    return calls


def check_budget(session: Session, owner: ApiKey, expected: Decimal) -> None:
    """A 422 `budget_exceeded` when the key's budget left cannot cover the calls' estimate."""
    left = owner_budget(session, owner)
    if left is not None and expected > left:
        raise ApiError(
            422,
            f"these embeddings would cost about ${expected:f}; this key's budget has "
            f"${max(left, Decimal(0)):f} left (an admin can raise it with 'llmqueue keys set-budget')",
            param="Authorization",
            code="budget_exceeded",
        )


def store_calls(
    session: Session,
    owner: ApiKey,
    model: str,
    calls: Sequence[Call],
    *,
    dimensions: int | None,
    input_type: InputType | None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
) -> list[str]:
    """One queued embedding job per call (not committed); returns their ids, in input order."""
    rows = [
        embedding_job_row(
            owner_id=owner.id,
            model=model,
            request=embedding_request(
                [i.stored() for i in call.items],
                dimensions=dimensions,
                input_type=input_type.value if input_type else None,
            ),
            metadata=metadata,
            idempotency_key=idempotency_key,
            deadline_at=deadline_at,
        )
        for call in calls
    ]
    insert_jobs(session, rows)
    return [row["id"] for row in rows]
