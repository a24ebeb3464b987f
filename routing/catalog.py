"""The model catalog: models, their deployments, prices, windows, capabilities and scores.

Loaded from TOML (the shipped `default_catalog.toml`, or the file `LLMQUEUE_CATALOG` names)
and validated whole at start: an unknown price, an unknown model in a deployment, a
duplicate name or a malformed file raises `CatalogError` naming the file and the field.
Nothing here is ever defaulted silently; a free model says `input_price = 0` itself.

A model is of one `kind`: `chat` (the default) or `embedding`. An embedding model declares its
vectors' `dimensions` (and the other lengths it can be asked for, `dimension_options`), its
limits (`max_input_tokens` per input, `max_inputs_per_call`, optionally `max_tokens_per_call`)
and an `input_price` (its output price is 0), and none of a chat model's generation fields; a
chat model declares none of the embedding fields. Its `context_window` is then its
`max_input_tokens` and its `max_output_tokens` 0, so code reading those of any model stays true.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.providers import provider_spec

DEFAULT_CATALOG_PATH = Path(__file__).with_name("default_catalog.toml")

CAPABILITIES = ("tools", "vision", "json_mode", "json_schema", "streaming")


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file and what is wrong."""


class ModelKind(StrEnum):
    """What a model does; routing never sends a job to a model of the other kind."""

    CHAT = "chat"
    EMBEDDING = "embedding"


# Fields only a chat model declares (an embedding model's are derived), and the embedding
# fields, of which a chat model declares none.
CHAT_ONLY_FIELDS = ("context_window", "max_output_tokens", "cached_input_price", "capabilities")
EMBEDDING_FIELDS = (
    "dimensions",
    "dimension_options",
    "max_input_tokens",
    "max_inputs_per_call",
    "max_tokens_per_call",
)
EMBEDDING_REQUIRED = ("dimensions", "max_input_tokens", "max_inputs_per_call", "input_price")


class ModelSpec(BaseModel):
    """One model as the catalog declares it. Prices are USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    provider: str
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(ge=0)  # 0 for an embedding model only (checked below)
    input_price: Decimal = Field(ge=0)
    output_price: Decimal = Field(ge=0)
    cached_input_price: Decimal | None = Field(default=None, ge=0)
    capabilities: frozenset[str] = frozenset()
    quality: float = Field(ge=0, le=100)
    latency_ms: float = Field(default=1000, gt=0)  # a typical latency, until health observes one
    tags: tuple[str, ...] = ()
    # --- embedding models (kind = "embedding"); see the module docstring ---
    kind: ModelKind = ModelKind.CHAT
    dimensions: int | None = Field(default=None, gt=0)  # the native vector length
    # Other lengths a request may ask for: a list, or "any" (any length up to `dimensions`, as
    # OpenAI's text-embedding-3 and Gemini shorten theirs); none: the native length only.
    dimension_options: tuple[int, ...] | Literal["any"] = ()
    max_input_tokens: int | None = Field(default=None, gt=0)  # per input text
    max_inputs_per_call: int | None = Field(default=None, gt=0)
    max_tokens_per_call: int | None = Field(default=None, gt=0)  # summed over a call's inputs

    @model_validator(mode="before")
    @classmethod
    def _fields_of_its_kind(cls, data: Any) -> Any:
        """Each kind declares its own fields only; an embedding model's chat fields are derived."""
        if not isinstance(data, dict):
            return data
        kind = data.get("kind", ModelKind.CHAT)
        if kind not in set(ModelKind):
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(ModelKind)}")
        if kind != ModelKind.EMBEDDING:
            declared = [name for name in EMBEDDING_FIELDS if name in data]
            if declared:
                raise ValueError(f"{declared[0]}: an embedding model's field; this is a chat model")
            return data
        declared = [name for name in CHAT_ONLY_FIELDS if name in data]
        if declared:
            raise ValueError(
                f"{declared[0]}: a chat model's field; an embedding model declares max_input_tokens "
                "(per input) instead"
            )
        missing = [name for name in EMBEDDING_REQUIRED if data.get(name) is None]
        if missing:
            raise ValueError(f"{missing[0]}: required for an embedding model")
        if Decimal(str(data.get("output_price", 0))) != 0:
            raise ValueError("output_price: an embedding model is billed for its input only; leave it out")
        return {
            **data,
            "output_price": 0,
            "context_window": data["max_input_tokens"],
            "max_output_tokens": 0,
        }

    # --- provider batch (routing/economy.py): the provider's batch API prices, USD per million
    # tokens, about half the online ones; a model without them never goes by provider batch.
    batch_input_price: Decimal | None = Field(default=None, ge=0)
    batch_output_price: Decimal | None = Field(default=None, ge=0)
    batch_cached_input_price: Decimal | None = Field(default=None, ge=0)  # else batch_input_price

    @property
    def has_batch_prices(self) -> bool:
        return self.batch_input_price is not None and self.batch_output_price is not None

    @model_validator(mode="after")
    def _batch_prices_complete(self) -> ModelSpec:
        given = [self.batch_input_price is not None, self.batch_output_price is not None]
        if any(given) and not all(given):
            raise ValueError("batch prices need both batch_input_price and batch_output_price")
        if self.batch_cached_input_price is not None and not all(given):
            raise ValueError("batch_cached_input_price needs batch_input_price and batch_output_price")
        return self

    # --- end of provider batch fields

    @model_validator(mode="after")
    def _known_names(self) -> ModelSpec:
        provider_spec(self.provider)  # an unknown provider stops the start, naming it and the table
        unknown = set(self.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"unknown capabilities {sorted(unknown)}; expected some of {CAPABILITIES}")
        if self.kind is ModelKind.CHAT and self.max_output_tokens < 1:
            raise ValueError("max_output_tokens: must be greater than 0")
        if self.dimensions is not None and isinstance(self.dimension_options, tuple):
            too_long = [n for n in self.dimension_options if not 0 < n <= self.dimensions]
            if too_long:
                raise ValueError(f"dimension_options: {too_long[0]} is not between 1 and {self.dimensions}")
        return self

    def supports_dimensions(self, wanted: int) -> bool:
        """Whether an embedding request may ask this model for vectors `wanted` long."""
        if self.dimensions is None:
            return False
        if self.dimension_options == "any":
            return 0 < wanted <= self.dimensions
        return wanted == self.dimensions or wanted in self.dimension_options


class DeploymentSpec(BaseModel):
    """Where a model is served: an endpoint, the key's variable and its rate limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    # Capacity (workers/capacity.py): requests and tokens per minute, calls in flight. Unset: no
    # limit of our own, but what the provider's rate-limit headers announce is learned.
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    # Provider-specific: Azure's api_version and deployment, Bedrock's region, a model id
    # that differs from the catalog's (Bedrock ARNs, Azure deployment names).
    api_version: str | None = None
    region: str | None = None
    provider_model: str | None = None
    # --- provider batch: the model or deployment a provider batch names when it is not the
    # online one (Azure's batches go to a deployment of type Global Batch), and this
    # deployment's enqueued-token quota for batches (set by the provider per account tier).
    batch_provider_model: str | None = None
    batch_enqueued_tokens: int | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Deployment:
    """A deployment joined with its model, as routing and workers use it."""

    spec: DeploymentSpec
    model: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def provider(self) -> str:
        return self.model.provider

    @property
    def provider_model(self) -> str:
        return self.spec.provider_model or self.model.id

    @property
    def batch_provider_model(self) -> str:
        """The model (or Azure deployment) a provider batch of this deployment names."""
        return self.spec.batch_provider_model or self.provider_model

    @property
    def api_key_env(self) -> str | None:
        if self.spec.api_key_env is not None:
            return self.spec.api_key_env
        return provider_spec(self.provider).key_env


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelSpec]
    deployments: dict[str, Deployment]
    source: str = "<memory>"
    by_model: dict[str, list[Deployment]] = field(default_factory=dict)

    def model(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def deployment(self, name: str) -> Deployment | None:
        return self.deployments.get(name)

    def deployments_of(self, model_id: str) -> list[Deployment]:
        return self.by_model.get(model_id, [])

    def providers(self) -> list[str]:
        return sorted({m.provider for m in self.models.values()})

    def deployments_of_kind(self, kind: ModelKind) -> list[Deployment]:
        """Every deployment whose model is of `kind`, in catalog order."""
        return [d for d in self.deployments.values() if d.model.kind is kind]


def catalog_from_dict(data: dict[str, Any], source: str = "<memory>") -> Catalog:
    """Validate a parsed catalog. Every model must have at least one deployment."""
    unknown_top = set(data) - {"models", "deployments"}
    if unknown_top:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    models: dict[str, ModelSpec] = {}
    for i, raw in enumerate(data.get("models", [])):
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"{source}: models[{i}] ({raw.get('id', '?')}): {_first_error(exc)}") from None
        if spec.id in models:
            raise CatalogError(f"{source}: models[{i}]: duplicate model id {spec.id!r}")
        models[spec.id] = spec
    if not models:
        raise CatalogError(f"{source}: no models declared")
    deployments: dict[str, Deployment] = {}
    by_model: dict[str, list[Deployment]] = {}
    for i, raw in enumerate(data.get("deployments", [])):
        try:
            dspec = DeploymentSpec.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(
                f"{source}: deployments[{i}] ({raw.get('name', '?')}): {_first_error(exc)}"
            ) from None
        if dspec.name in deployments:
            raise CatalogError(f"{source}: deployments[{i}]: duplicate deployment name {dspec.name!r}")
        model = models.get(dspec.model)
        if model is None:
            raise CatalogError(f"{source}: deployments[{i}] ({dspec.name}): unknown model {dspec.model!r}")
        dep = Deployment(dspec, model)
        deployments[dspec.name] = dep
        by_model.setdefault(model.id, []).append(dep)
    orphans = sorted(set(models) - set(by_model))
    if orphans:
        raise CatalogError(f"{source}: models with no deployment: {orphans}")
    return Catalog(models=models, deployments=deployments, source=source, by_model=by_model)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if not where:  # a model-level check: its message names the field itself
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {err['msg']}"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate a catalog file; `None` means `$LLMQUEUE_CATALOG` or the default."""
    chosen = Path(path or os.environ.get("LLMQUEUE_CATALOG") or DEFAULT_CATALOG_PATH)
    try:
        data = tomllib.loads(chosen.read_text())
    except FileNotFoundError:
        raise CatalogError(
            f"{chosen}: catalog file not found (set LLMQUEUE_CATALOG to a TOML file)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{chosen}: not valid TOML: {exc}") from None
    return catalog_from_dict(data, str(chosen))


@cache
def _cached(path: str) -> Catalog:
    return load_catalog(path)


def get_catalog() -> Catalog:
    """The process's catalog, loaded once per file path."""
    return _cached(os.environ.get("LLMQUEUE_CATALOG") or str(DEFAULT_CATALOG_PATH))
