"""/v1/models: the model catalog as clients see it.

The list is in OpenAI's shape (`{"object": "list", "data": [{"id", "object": "model",
"created", "owned_by"}]}`) so `openai.OpenAI(base_url=.../v1).models.list()` works, and
each entry adds what routing knows about the model: prices per million tokens (Decimal,
as strings), context window, output limit, capabilities, quality, tags and deployments, and
its `kind`; an embedding model also shows its vectors' dimensions and its per-call limits.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import OwnerDep
from api.errors import ApiError
from routing.catalog import CAPABILITIES, Catalog, ModelKind, ModelSpec, get_catalog

router = APIRouter(prefix="/v1/models", tags=["models"])


class DeploymentPublic(BaseModel):
    name: str
    rpm: int | None
    tpm: int | None
    weight: float


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the catalog file was last changed (OpenAI's field).")
    owned_by: str = Field(description="The provider.")
    provider: str
    context_window: int
    max_output_tokens: int
    input_price_per_million: str = Field(description="USD per million input tokens.")
    output_price_per_million: str
    cached_input_price_per_million: str | None
    capabilities: list[str]
    quality: float
    typical_latency_ms: float
    tags: list[str]
    deployments: list[DeploymentPublic]
    kind: ModelKind = Field(description="chat, or embedding (vectors; served by /v1/embeddings).")
    # Embedding models only (null for chat models):
    dimensions: int | None = Field(description="The vectors' native length.")
    dimension_options: list[int] | Literal["any"] | None = Field(
        description='Shorter lengths a request may ask for; "any": any length up to `dimensions`.'
    )
    max_input_tokens: int | None = Field(description="Tokens one input may have.")
    max_inputs_per_call: int | None
    max_tokens_per_call: int | None = Field(description="Tokens one provider call may carry, summed.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


def _price(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


def catalog_created(catalog: Catalog) -> int:
    """The catalog file's modification time: OpenAI's `created` needs an integer, and a
    catalog entry has no creation date of its own."""
    try:
        return int(Path(catalog.source).stat().st_mtime)
    except OSError:
        return 0


def model_public(catalog: Catalog, model: ModelSpec) -> ModelPublic:
    price = _price(model.input_price)
    out_price = _price(model.output_price)
    assert price is not None and out_price is not None
    return ModelPublic(
        id=model.id,
        created=catalog_created(catalog),
        owned_by=model.provider,
        provider=model.provider,
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
        input_price_per_million=price,
        output_price_per_million=out_price,
        cached_input_price_per_million=_price(model.cached_input_price),
        capabilities=sorted(model.capabilities),
        quality=model.quality,
        typical_latency_ms=model.latency_ms,
        tags=list(model.tags),
        deployments=[
            DeploymentPublic(name=d.name, rpm=d.spec.rpm, tpm=d.spec.tpm, weight=d.spec.weight)
            for d in catalog.deployments_of(model.id)
        ],
        kind=model.kind,
        dimensions=model.dimensions,
        dimension_options=_options(model),
        max_input_tokens=model.max_input_tokens,
        max_inputs_per_call=model.max_inputs_per_call,
        max_tokens_per_call=model.max_tokens_per_call,
    )


def _options(model: ModelSpec) -> list[int] | Literal["any"] | None:
    if model.kind is not ModelKind.EMBEDDING:
        return None
    return "any" if model.dimension_options == "any" else list(model.dimension_options)


def _check_choice(value: str | None, known: tuple[str, ...] | list[str], param: str) -> None:
    if value is not None and value not in known:
        raise ApiError(
            422,
            f"unknown {param} {value!r}; expected one of: {', '.join(known)}",
            param=param,
            code=f"unknown_{param}",
        )


def matches(
    model: ModelSpec,
    capability: str | None,
    provider: str | None,
    tag: str | None,
    kind: ModelKind | None = None,
) -> bool:
    return (
        (capability is None or capability in model.capabilities)
        and (provider is None or model.provider == provider)
        and (tag is None or tag in model.tags)
        and (kind is None or model.kind is kind)
    )


@router.get("", response_model=ModelList)
def list_models(
    owner: OwnerDep,
    capability: Annotated[str | None, Query(description="Only models with this capability.")] = None,
    provider: Annotated[str | None, Query(description="Only this provider's models.")] = None,
    tag: Annotated[str | None, Query(description="Only models with this tag, e.g. cheap.")] = None,
    kind: Annotated[str | None, Query(description="Only chat models, or only embedding models.")] = None,
) -> ModelList:
    """The catalog: every model with its prices, window, capabilities, quality and deployments."""
    catalog = get_catalog()
    _check_choice(capability, CAPABILITIES, "capability")
    _check_choice(provider, catalog.providers(), "provider")
    _check_choice(kind, [k.value for k in ModelKind], "kind")
    wanted = ModelKind(kind) if kind is not None else None
    chosen = [m for m in catalog.models.values() if matches(m, capability, provider, tag, wanted)]
    return ModelList(data=[model_public(catalog, m) for m in sorted(chosen, key=lambda m: m.id)])


@router.get(
    "/{model_id:path}",
    response_model=ModelPublic,
    responses={404: {"description": "No such model in the catalog"}},
)
def read_model(model_id: str, owner: OwnerDep) -> ModelPublic:
    """One model by id (ids may contain '/', e.g. azure/gpt-4o-mini)."""
    catalog = get_catalog()
    model = catalog.model(model_id)
    if model is None:
        raise ApiError(
            404,
            f"no model {model_id!r} in the catalog; GET /v1/models lists them",
            param="model",
            code="model_not_found",
        )
    return model_public(catalog, model)
