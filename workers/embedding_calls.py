"""An embedding job's provider call, made on the engine's event loop.

The engine (`workers/engine.py`) claims embedding attempts as it claims chat ones (same lease,
same breakers) and hands each here. One call through the deployment's adapter `embed`: the
inputs' tokens are booked against the deployment's (and the key's) capacity, with no output;
the usage is settled at the model's input price (`routing.embeddings.embedding_cost`); the
vectors are checked (one per input, all of the length asked) and packed as float32 right away,
so a call of 2,048 vectors holds 12 MB in flight rather than ten times that in Python floats.
Outcome and vectors go to the engine's writer together, which writes them in one transaction
(`workers/calls.py`); a failure goes there as a chat call's does, to be retried or failed over
(to another deployment of the same model only: `workers/dispatch.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from pydantic import ValidationError

from core.embeddings import EmbeddingRequest, EmbeddingResponse
from core.settings import Settings
from core.text import storable
from core.types import FinishReason
from jobstore import transitions
from jobstore.claims import Claimed
from jobstore.embedding_jobs import CallVectors, call_request, input_ids
from routing.catalog import Catalog, Deployment
from routing.embeddings import embedding_cost
from routing.tokens import calibrate, count_text
from workers import capacity, health
from workers.call_loop import CallLoop
from workers.call_reports import report_call
from workers.calls import Failed, Succeeded
from workers.policy import Action
from workers.providers.errors import InvalidRequest, ProviderError, Transient, scrub_for

log = logging.getLogger(__name__)
MAX_ID_CHARS = 200  # attempts.provider_request_id


class Writer(Protocol):
    def submit(self, item: Succeeded | Failed) -> None: ...


class Engine(Protocol):
    """What an embedding call needs of the engine that claimed it."""

    @property
    def settings(self) -> Settings: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def loop(self) -> CallLoop: ...
    @property
    def writer(self) -> Writer: ...
    def endpoints(self, deployment: Deployment) -> tuple[str | None, ...]: ...


def tokens_to_book(claim: Claimed, request: EmbeddingRequest, deployment: Deployment) -> int:
    """The inputs' tokens as this provider counts them (an embedding call produces no output)."""
    raw = claim.request_tokens
    if raw is None:
        raw = sum(count_text(text) for text in request.inputs)
    return calibrate(raw, deployment.provider)


def vectors_of(claim: Claimed, request: EmbeddingRequest, response: EmbeddingResponse) -> CallVectors:
    """The answer's vectors packed under their inputs' ids; a ProviderError when the provider
    answered other than one vector per input, each as long as asked."""
    try:
        packed = CallVectors.of(input_ids(claim.request), response.vectors)
    except ValueError as exc:
        raise ProviderError(f"the provider's answer cannot be used: {exc}") from None
    wanted = request.dimensions
    if wanted is not None and packed.dims != wanted:
        raise ProviderError(f"the provider answered vectors {packed.dims} long; {wanted} were asked for")
    return packed


def outcome_of(
    response: EmbeddingResponse, deployment: Deployment, latency_ms: float, emulated: bool
) -> transitions.CallOutcome:
    """An embedding call as the store records it: input tokens and their cost, no text."""
    request_id = response.provider_request_id
    return transitions.CallOutcome(
        text="",
        tool_calls=None,
        finish_reason=FinishReason.STOP.value,
        input_tokens=response.usage.input_tokens,
        output_tokens=0,
        cached_input_tokens=0,
        reasoning_tokens=0,
        cost_usd=embedding_cost(deployment.model, response.usage),
        latency_ms=latency_ms,
        provider_request_id=storable(request_id)[:MAX_ID_CHARS] if request_id else None,
        rate_limit_headers={storable(k): storable(v) for k, v in response.rate_limit_headers.items()},
        emulated=emulated,
    )


async def make_call(engine: Engine, claim: Claimed, key_limits: capacity.Limits | None) -> None:
    """Make an embedding attempt's call and hand its outcome (and vectors) to the writer."""
    deployment = engine.catalog.deployment(claim.deployment)
    if deployment is None:
        gone = ProviderError(f"deployment {claim.deployment!r} left the catalog")
        engine.writer.submit(Failed(claim, gone, action=Action.FAILOVER))
        return
    try:
        request = call_request(claim.request, claim.request_tokens)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        unreadable = InvalidRequest(f"the job's stored embedding request cannot be used: {exc}")
        engine.writer.submit(Failed(claim, unreadable, action=Action.FAIL))
        return
    settings = engine.settings
    key = (claim.owner_id, key_limits) if key_limits is not None else None
    admission = await capacity.admit(deployment, tokens_to_book(claim, request, deployment), key=key)
    timeout = settings.provider_timeout_s + 5
    await capacity.wait_for_slot(admission, deployment, claim.id, timeout)
    started = time.perf_counter()
    error: ProviderError | None = None
    try:
        adapter = await engine.loop.adapter(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        )
        response = await asyncio.wait_for(adapter.embed(request), timeout)
        vectors = vectors_of(claim, request, response)
    except TimeoutError:
        error = Transient(f"no answer within {timeout:.0f} s (timed out)")
    except ProviderError as exc:  # no key or internal host reaches users, as for chat calls
        error = await asyncio.to_thread(scrub_for, exc, deployment.api_key_env, engine.endpoints(deployment))
    latency = (time.perf_counter() - started) * 1000
    await report_call(
        admission,
        deployment,
        latency,
        error,
        used_tokens=None if error is not None else response.usage.input_tokens,
        headers=None if error is not None else response.rate_limit_headers,
    )
    if error is not None:
        engine.writer.submit(Failed(claim, error, latency_ms=round(latency, 2)))
        return
    health.record_success(deployment.name, time.time(), latency)
    emulated = engine.loop.emulated.get(deployment.name, False)
    outcome = outcome_of(response, deployment, round(latency, 2), emulated)
    engine.writer.submit(Succeeded(claim, outcome, vectors))
