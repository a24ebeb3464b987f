"""What a provider adapter is, and how a deployment becomes a concrete endpoint to call.

An adapter is one small module in this package holding one class that satisfies
`Provider`: it is built once per deployment (building SDK clients is costly, so the worker
caches them), and its `complete` translates one `ChatRequest` into its SDK's call and the
answer back into a `ChatResponse`, raising only the errors in `errors.py`. The adapter never
retries: the SDK's own retries are off and the worker owns retry and failover.

Its `embed` does the same for one `EmbeddingRequest` (core/embeddings.py) on an embedding
deployment: one provider call, vectors back in input order. It first checks the call locally
(`check_embedding_call`): a chat deployment, a `dimensions` the catalog does not offer, or more
inputs than the model's `max_inputs_per_call` or the provider's own per-call limit, is an
InvalidRequest before anything is sent, since planning the calls is the caller's job
(`routing.embeddings.plan_calls`). A provider with no embeddings API raises InvalidRequest
saying so (`no_embeddings`).

`resolve_target` decides where a deployment's calls go: the real provider when its key is in
the environment, the built-in emulator when it is not and the emulator is enabled, or a
`MissingCredentials` error naming the variable to set. A variable may have conventional
alternates (the provider table's `key_env_fallbacks`: Gemini's key in GEMINI_API_KEY, else
GOOGLE_API_KEY).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from core.embeddings import EmbeddingRequest, EmbeddingResponse
from core.providers import provider_spec
from core.settings import get_settings
from core.types import ChatRequest, ChatResponse, Message, Usage
from routing.catalog import Deployment, ModelKind, get_catalog
from routing.credentials import emulated, resolve, unavailable
from routing.tokens import calibrate, count_text
from workers.providers.errors import InvalidRequest, MissingCredentials, ProviderError

TextSink = Callable[[str], Awaitable[None]]

EMULATOR_KEY = "emulator-key-not-secret"


@dataclass(frozen=True)
class Target:
    """A deployment resolved to an endpoint. `api_key` is never logged or stored."""

    deployment: Deployment
    base_url: str | None
    api_key: str | None
    timeout_s: float
    emulated: bool

    def __repr__(self) -> str:  # keep the key out of every log line and traceback
        return (
            f"Target(deployment={self.deployment.name!r}, base_url={self.base_url!r}, "
            f"emulated={self.emulated})"
        )


class Provider(Protocol):
    """One provider's adapter. See the module docstring."""

    def __init__(self, target: Target) -> None: ...

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> ChatResponse:
        """Make one call. With `on_text`, stream and hand each text delta to it as it arrives."""
        ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embed the request's inputs in one call: `vectors[i]` for `inputs[i]`."""
        ...

    async def aclose(self) -> None: ...


def check_embedding_call(target: Target, request: EmbeddingRequest, provider_limit: int) -> None:
    """Refuse, before any call, what the deployment's model or the provider cannot take in one
    call: a chat model, a vector length the catalog does not offer, or more inputs than
    `max_inputs_per_call` or `provider_limit`."""
    deployment = target.deployment
    model = deployment.model
    if model.kind is not ModelKind.EMBEDDING:
        raise InvalidRequest(
            f"deployment {deployment.name!r} serves {model.id!r}, a {model.kind.value} model: it cannot embed"
        )
    if request.dimensions is not None and not model.supports_dimensions(request.dimensions):
        options = model.dimension_options
        shorter = "any length up to it" if options == "any" else ", ".join(map(str, options)) or "none"
        raise InvalidRequest(
            f"{model.id} cannot make vectors {request.dimensions} long: its length is {model.dimensions} "
            f"(shorter: {shorter})"
        )
    limit = min(provider_limit, model.max_inputs_per_call or provider_limit)
    if len(request.inputs) > limit:
        raise InvalidRequest(
            f"{len(request.inputs)} inputs in one call to {deployment.name!r}; {model.id} takes at most "
            f"{limit} per call: plan the calls first (routing.embeddings.plan_calls)"
        )


def no_embeddings(target: Target) -> InvalidRequest:
    """The error of a provider that has no embeddings API."""
    provider = target.deployment.provider
    return InvalidRequest(f"{provider} has no embeddings API: embed with another provider's embedding model")


def vectors_in_order(indexed: Iterable[tuple[int, list[float]]], expected: int) -> list[list[float]]:
    """The vectors of an answer that numbers them, in input order; an answer that does not hold
    exactly one vector per input is a ProviderError (retried: it is the provider's fault)."""
    vectors: list[list[float] | None] = [None] * expected
    for index, vector in indexed:
        if not 0 <= index < expected or vectors[index] is not None:
            raise ProviderError(f"the provider answered with a vector numbered {index} for {expected} inputs")
        vectors[index] = vector
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        raise ProviderError(f"the provider answered no vector for input {missing[0]} of {expected}")
    return [v for v in vectors if v is not None]


def estimated_usage(request: EmbeddingRequest, provider: str) -> Usage:
    """The usage of a call whose provider reported none: its inputs' tokens, calibrated."""
    raw = request.counted_tokens
    if raw is None:
        raw = sum(count_text(text) for text in request.inputs)
    return Usage(input_tokens=calibrate(raw, provider))


def resolve_target(
    deployment: Deployment,
    *,
    emulator_url: str | None,
    emulator_mode: str = "auto",
    timeout_s: float = 120.0,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """Where this deployment's calls go (`routing.credentials` decides what is configured).

    emulator_mode: "always" sends every call to the emulator; "never" never does; "auto" does
    so only for a deployment that is not configured (its key or its endpoint unset).
    """
    env = os.environ if environ is None else environ
    resolution = resolve(deployment, env)
    if emulated(resolution.problem, emulator_url=emulator_url, emulator_mode=emulator_mode):
        assert emulator_url is not None
        url = emulator_url.rstrip("/") + provider_spec(deployment.provider).emulator_path
        return Target(deployment, url, EMULATOR_KEY, timeout_s, True)
    if resolution.problem is not None:
        raise MissingCredentials(f"deployment {deployment.name!r} is not configured: {resolution.problem}")
    return Target(deployment, resolution.base_url, resolution.key, timeout_s, False)


def openai_style_content(message: Message) -> str | list[dict[str, Any]]:
    """A message's content as text and `image_url` parts, the shape OpenAI set and Cohere's
    and Mistral's chat APIs also take."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.type == "text":
            parts.append({"type": "text", "text": part.text or ""})
        elif part.image_url is not None:
            image: dict[str, Any] = {"url": part.image_url.url}
            if part.image_url.detail:
                image["detail"] = part.image_url.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts


@cache
def unavailable_deployments() -> dict[str, str]:
    """The catalog's deployments this process cannot call (no key, no endpoint, no emulator),
    each with what to set; read once (the environment does not change under a process)."""
    settings = get_settings()
    return unavailable(
        get_catalog(), os.environ, emulator_url=settings.emulator_url, emulator_mode=settings.emulator_mode
    )
