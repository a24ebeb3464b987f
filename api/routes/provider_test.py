"""POST /v1/providers/{name}/test: one small real call to a provider, reported, never queued.

`name` is a provider (its cheapest chat deployment is used, or the body's `deployment`) or a
deployment name; an embedding deployment is tested by embedding the prompt (the answer says
the vector's length). The adapter is built for this request on the API's event loop, exactly
as a worker builds it (same key resolution, same emulator rules), called once and closed.
The report carries the latency, the model's answer and usage, or the error class of the
taxonomy (`workers/providers/errors.py`) and its message. A key never appears in it: the
message of a failed call is scrubbed of the key the call used.

This is the one place the API calls a provider, on purpose and only when asked: a paid
probe is never made by anything else.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import OwnerDep
from api.errors import ApiError
from core.embeddings import EmbeddingRequest
from core.providers import PROVIDERS
from core.settings import get_settings
from core.types import ChatRequest, ChatResponse, Message, Usage
from routing.catalog import Catalog, Deployment, ModelKind, get_catalog
from workers.providers import adapter_class
from workers.providers.base import Target, resolve_target
from workers.providers.errors import ProviderError

router = APIRouter(prefix="/v1/providers", tags=["providers"])

DEFAULT_PROMPT = "Reply with the single word: pong"
TEST_MAX_TOKENS = 32
TEST_TIMEOUT_S = 30.0


class ProviderTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deployment: str | None = Field(default=None, description="A deployment of this provider to test.")
    prompt: str = Field(default=DEFAULT_PROMPT, min_length=1, max_length=2000)


class ProviderTestError(BaseModel):
    type: str = Field(description="The error class: rate_limited, transient, invalid_request, auth, ...")
    message: str
    status_code: int | None = None


class ProviderTestResult(BaseModel):
    ok: bool
    provider: str
    deployment: str
    model: str
    emulated: bool = Field(description="True when the call went to the built-in emulator, not the provider.")
    latency_ms: float | None
    answer: str | None
    usage: Usage | None
    provider_request_id: str | None
    error: ProviderTestError | None


def choose_deployment(name: str, wanted: str | None, catalog: Catalog) -> Deployment:
    """The deployment `name` (and the optional body's `deployment`) designate, or a 404."""
    found = catalog.deployment(name)
    if found is not None:
        if wanted is not None and wanted != found.name:
            raise ApiError(
                422,
                f"{name!r} is a deployment; 'deployment' must be left out or equal it",
                param="deployment",
                code="deployment_mismatch",
            )
        return found
    if name not in PROVIDERS:
        raise ApiError(
            404,
            f"no provider or deployment named {name!r}; providers: {', '.join(PROVIDERS)}",
            param="name",
            code="provider_not_found",
        )
    own = [d for d in catalog.deployments.values() if d.provider == name]
    if wanted is not None:
        chosen = next((d for d in own if d.name == wanted), None)
        if chosen is None:
            raise ApiError(
                404,
                f"provider {name!r} has no deployment {wanted!r}",
                param="deployment",
                code="deployment_not_found",
            )
        return chosen
    if not own:
        raise ApiError(
            404,
            f"the catalog has no deployment of provider {name!r}",
            param="name",
            code="provider_not_found",
        )
    chat = [d for d in own if d.model.kind is ModelKind.CHAT] or own
    return min(chat, key=lambda d: (d.model.input_price + d.model.output_price, d.name))


def scrub(text: str, target: Target | None) -> str:
    """The text with the call's key, if it somehow appears, masked."""
    key = target.api_key if target is not None else None
    return text.replace(key, "***") if key and len(key) >= 4 else text


async def call_once(
    deployment: Deployment, prompt: str
) -> tuple[ChatResponse | None, ProviderError | None, Target | None, float | None]:
    """(response, error, target, latency_ms) for one call; every failure becomes a ProviderError."""
    settings = get_settings()
    cls = adapter_class(deployment.provider)
    try:
        target = resolve_target(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=min(settings.provider_timeout_s, TEST_TIMEOUT_S),
        )
    except ProviderError as exc:
        return None, exc, None, None
    request = ChatRequest(messages=[Message(role="user", content=prompt)], max_tokens=TEST_MAX_TOKENS)
    started = time.perf_counter()
    adapter: Any = None
    try:
        adapter = cls(target)
        if deployment.model.kind is ModelKind.EMBEDDING:
            embedded = await adapter.embed(EmbeddingRequest(inputs=[prompt]))
            text = f"a vector of {len(embedded.vectors[0])} dimensions"
            response = ChatResponse(
                text=text, usage=embedded.usage, provider_request_id=embedded.provider_request_id
            )
        else:
            response = await adapter.complete(request)
        return response, None, target, (time.perf_counter() - started) * 1000
    except ProviderError as exc:
        return None, exc, target, (time.perf_counter() - started) * 1000
    except Exception as exc:  # an adapter bug or a bad deployment entry: report its class, not a 500
        error = ProviderError(f"unexpected {type(exc).__name__} in the {deployment.provider} adapter")
        return None, error, target, (time.perf_counter() - started) * 1000
    finally:
        if adapter is not None:
            await adapter.aclose()


@router.post(
    "/{name:path}/test",
    response_model=ProviderTestResult,
    responses={404: {"description": "No such provider or deployment"}},
)
async def test_provider(
    name: str, owner: OwnerDep, body: ProviderTestRequest | None = None
) -> ProviderTestResult:
    """Make one small real call and report latency, the answer, usage, or the mapped error."""
    options = body or ProviderTestRequest()
    deployment = choose_deployment(name, options.deployment, get_catalog())
    response, error, target, latency = await call_once(deployment, options.prompt)
    report = ProviderTestResult(
        ok=error is None,
        provider=deployment.provider,
        deployment=deployment.name,
        model=deployment.model.id,
        emulated=bool(target and target.emulated),
        latency_ms=round(latency, 2) if latency is not None else None,
        answer=None,
        usage=None,
        provider_request_id=None,
        error=None,
    )
    if response is not None:
        report.answer = scrub(response.text, target)
        report.usage = response.usage
        report.provider_request_id = response.provider_request_id
    if error is not None:
        report.error = ProviderTestError(
            type=error.kind, message=scrub(error.message, target), status_code=error.status_code
        )
        report.provider_request_id = error.provider_request_id
    return report
