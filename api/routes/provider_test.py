"""POST /v1/providers/{name}/test: one small real call to a provider, reported, never queued.

Admin keys only: it spends the operator's money and reports operator detail. `name` is a
provider (its cheapest chat deployment is used, or the body's `deployment`) or a deployment
name; an embedding deployment is tested by embedding the prompt (the answer says the
vector's length).
The prompt and max_tokens are fixed (TEST_PROMPT, TEST_MAX_TOKENS), so a test costs a
known few tokens; a body asking for another prompt is refused.

The adapter is built for this request on the API's event loop, exactly as a worker builds
it (same key resolution, same emulator rules), called once and closed. Its maximum cost is
reserved against the admin key's budget first, and the call is recorded as an ended job of
that key (tag `provider_test`) with its usage and cost, settling the reservation: the test
is in the ledger, the key's jobs and its spend like any other call
(`jobstore/manual_calls.py`). The report carries the latency, the answer and usage, the
cost and job id, or the error class of the taxonomy (`workers/providers/errors.py`) and its
message. A key never appears in it: the message of a failed call is scrubbed of the key the
call used.

This is the one place the API calls a provider, on purpose and only when asked: a paid
probe is never made by anything else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep
from api.errors import ApiError
from core.clock import utcnow
from core.embeddings import EmbeddingRequest
from core.providers import PROVIDERS
from core.settings import get_settings
from core.types import ChatRequest, ChatResponse, Message, Usage
from jobstore import manual_calls
from jobstore.db import transaction
from routing.catalog import Catalog, Deployment, ModelKind, get_catalog
from routing.costs import estimate_cost, settle_cost
from workers.providers import adapter_class
from workers.providers.base import Target, resolve_target
from workers.providers.errors import ProviderError, scrub_for

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/providers", tags=["providers"])

TEST_PROMPT = "Reply with the single word: pong"
TEST_MAX_TOKENS = 32
TEST_TIMEOUT_S = 30.0
TEST_TAG = "provider_test"
# The reservation's input side: the prompt's count doubled plus chat framing, above what any
# provider's tokenizer makes of these few words.
INPUT_TOKENS_BOUND = 64


class ProviderTestRequest(BaseModel):
    """Only which deployment: the prompt and max_tokens are fixed."""

    model_config = ConfigDict(extra="forbid")
    deployment: str | None = Field(default=None, description="A deployment of this provider to test.")


class ProviderTestError(BaseModel):
    type: str = Field(description="The error class: rate_limited, transient, invalid_request, auth, ...")
    message: str
    status_code: int | None = None


class ProviderTestResult(BaseModel):
    ok: bool
    job_id: str | None = Field(description="The job the test is recorded as (with its usage and cost).")
    cost_usd: str | None
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


def test_request() -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=TEST_PROMPT)], max_tokens=TEST_MAX_TOKENS)


def max_cost(deployment: Deployment) -> Decimal:
    """The most a test call can cost: its bounded input and all of TEST_MAX_TOKENS."""
    return estimate_cost(deployment.model, INPUT_TOKENS_BOUND, TEST_MAX_TOKENS)


async def call_once(
    deployment: Deployment, request: ChatRequest
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
    started = time.perf_counter()
    adapter: Any = None
    try:
        adapter = cls(target)
        if deployment.model.kind is ModelKind.EMBEDDING:
            embedded = await adapter.embed(EmbeddingRequest(inputs=[request.messages[0].text()]))
            text = f"a vector of {len(embedded.vectors[0])} dimensions"
            response = ChatResponse(
                text=text, usage=embedded.usage, provider_request_id=embedded.provider_request_id
            )
        else:
            response = await adapter.complete(request)
        return response, None, target, (time.perf_counter() - started) * 1000
    except ProviderError as exc:  # the admin sees it, and it is stored with the test's job
        latency = (time.perf_counter() - started) * 1000
        endpoints = (deployment.spec.base_url, target.base_url, settings.emulator_url)
        scrubbed = await asyncio.to_thread(scrub_for, exc, deployment.api_key_env, endpoints)
        return None, scrubbed, target, latency
    except Exception as exc:  # an adapter bug or a bad deployment entry: report its class, not a 500
        error = ProviderError(f"unexpected {type(exc).__name__} in the {deployment.provider} adapter")
        return None, error, target, (time.perf_counter() - started) * 1000
    finally:
        if adapter is not None:
            await adapter.aclose()


def _hold(owner_id: str, amount: Decimal) -> bool:
    with transaction() as session:
        return manual_calls.hold(session, owner_id, amount, utcnow())


def _release(owner_id: str, amount: Decimal) -> None:
    with transaction() as session:
        manual_calls.release(session, owner_id, amount)


def _record(
    owner_id: str,
    request: ChatRequest,
    outcome: manual_calls.CallOutcome,
    reserved: Decimal,
    started: datetime,
) -> str:
    with transaction() as session:
        job, alerts = manual_calls.record(
            session,
            owner_id,
            request.model_dump(mode="json", exclude_none=True),
            outcome,
            reserved=reserved,
            metadata={"tags": [TEST_TAG]},
            started_at=started,
            now=utcnow(),
        )
        for alert in alerts:
            log.warning(
                "budget %s of key %s crossed its soft limit $%s: $%s spent of $%s",
                alert.budget_id,
                alert.owner_id,
                alert.soft_limit_usd,
                alert.spent_usd,
                alert.limit_usd,
            )
        return job.id


def outcome_of(
    deployment: Deployment,
    response: ChatResponse | None,
    error: ProviderError | None,
    target: Target | None,
    latency: float | None,
) -> manual_calls.CallOutcome:
    usage = response.usage if response is not None else Usage()
    return manual_calls.CallOutcome(
        provider=deployment.provider,
        model=deployment.model.id,
        deployment=deployment.name,
        text=scrub(response.text, target) if response is not None else None,
        finish_reason=str(response.finish_reason) if response is not None else None,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=settle_cost(deployment.model, usage),
        latency_ms=latency,
        error_type=error.kind if error is not None else None,
        error_message=scrub(error.message, target) if error is not None else None,
        emulated=bool(target and target.emulated),
        provider_request_id=_request_id(response, error),
    )


def _request_id(response: ChatResponse | None, error: ProviderError | None) -> str | None:
    if response is not None:
        return response.provider_request_id
    return error.provider_request_id if error is not None else None


@router.post(
    "/{name:path}/test",
    response_model=ProviderTestResult,
    responses={
        403: {"description": "The caller is not an admin key"},
        404: {"description": "No such provider or deployment"},
        422: {"description": "A field other than deployment, or the admin key's budget is spent"},
    },
)
async def test_provider(
    name: str, admin: AdminDep, body: ProviderTestRequest | None = None
) -> ProviderTestResult:
    """Make one small real call (fixed prompt) and report latency, the answer, usage and cost,
    or the mapped error. The call is recorded as a job of the admin key."""
    options = body or ProviderTestRequest()
    deployment = choose_deployment(name, options.deployment, get_catalog())
    reserved = max_cost(deployment)
    if not await run_in_threadpool(_hold, admin.id, reserved):
        raise ApiError(
            422,
            f"the provider test may cost up to ${reserved:f}, more than this key's budget has left",
            param="Authorization",
            code="budget_exceeded",
        )
    request = test_request()
    started = utcnow()
    try:
        response, error, target, latency = await call_once(deployment, request)
        outcome = outcome_of(deployment, response, error, target, latency)
        job_id = await run_in_threadpool(_record, admin.id, request, outcome, reserved, started)
    except BaseException:
        await run_in_threadpool(_release, admin.id, reserved)
        raise
    report = ProviderTestResult(
        ok=error is None,
        job_id=job_id,
        cost_usd=f"{outcome.cost_usd:f}",
        provider=deployment.provider,
        deployment=deployment.name,
        model=deployment.model.id,
        emulated=outcome.emulated,
        latency_ms=round(latency, 2) if latency is not None else None,
        answer=outcome.text,
        usage=response.usage if response is not None else None,
        provider_request_id=outcome.provider_request_id,
        error=None,
    )
    if error is not None:
        report.error = ProviderTestError(
            type=error.kind, message=outcome.error_message or "", status_code=error.status_code
        )
    return report
