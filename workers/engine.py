"""The provider-call engine of a worker process: many calls in flight on one event loop.

A Celery task hands the engine a message's attempt ids (`accept`, on the task's thread): as
the engine has room (`max_in_flight`), it claims as many as can start in one transaction with
a lease, asks each deployment's breaker once, and starts each call as a coroutine on its event
loop (`workers/call_loop.py`); a full engine waits, holding its message, so a busy worker
leaves the next messages to the others. Once all are claimed the task returns and its message
is acked: from here on the lease, renewed every few seconds, is what keeps the call durable
(a killed worker stops renewing, and the sweeper hands its attempts to another worker within
seconds).

A call books its slot with the capacity limiter (`workers/capacity.py`) and sleeps until
it, then calls the provider through its adapter, streaming deltas when the job streams. Its
outcome goes to the writer (`workers/outcomes.py`), which writes many outcomes per
transaction and does the best-effort side effects only after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import select

from core.clock import utcnow
from core.settings import Settings, get_settings
from core.types import ChatRequest
from jobstore import claims
from jobstore.claims import Claimed
from jobstore.db import transaction
from jobstore.models import ApiKey, JobKind
from routing.catalog import Catalog, Deployment, get_catalog
from routing.costs import expected_output_tokens, settle_cost
from routing.tokens import calibrate, raw_request_tokens
from workers import capacity, embedding_calls, health, streams
from workers.call_loop import CallLoop, get_call_loop
from workers.call_reports import report_call
from workers.calls import BREAKER_OPEN, Failed, Succeeded, investigate, release_closed
from workers.next_step import NextStep
from workers.outcomes import OutcomeWriter, sanitized
from workers.policy import Action
from workers.providers.errors import ProviderError, Transient, scrub_for

log = logging.getLogger(__name__)
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
KEY_LIMITS_CACHE_S = 5.0


class CallEngine:
    def __init__(self, settings: Settings, catalog: Catalog, loop: CallLoop) -> None:
        self.settings = settings
        self.catalog = catalog
        self.loop = loop
        self.max_in_flight = settings.max_in_flight
        self._in_flight = 0
        self._tokens: dict[str, int] = {}  # claim token -> its calls not yet written
        self._live: set[str] = set()  # attempt ids in flight (done() frees each once, whatever it is told)
        self._room = threading.Condition()
        self._key_limits: dict[str, tuple[float, capacity.Limits]] = {}
        self.writer = OutcomeWriter(self, settings, catalog)

    # ------------------------------------------------------------ bookkeeping

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def held_tokens(self) -> list[str]:
        with self._room:
            return list(self._tokens)

    def done(self, claims_done: Sequence[Claimed]) -> None:
        """These calls' outcomes are written: their room frees, their tokens need no renewal."""
        with self._room:
            for claim in claims_done:
                if claim.id not in self._live:
                    continue
                self._live.discard(claim.id)
                self._in_flight -= 1
                left = self._tokens.get(claim.token, 0) - 1
                if left > 0:
                    self._tokens[claim.token] = left
                else:
                    self._tokens.pop(claim.token, None)
            self._room.notify_all()

    # ------------------------------------------------------------ taking work (a task's thread)

    def accept(self, attempt_ids: Sequence[str]) -> list[NextStep]:
        """Claim these attempts as the engine has room for them and start their calls; return
        what to send for the rest. Only what can start now is claimed: `max_in_flight` holds,
        and work still waiting in the message stays cancellable (a cancel ends a job no worker
        holds). The message is acked only once every attempt is claimed or passed on, so a full
        worker takes no more messages and leaves them to the others; if it is killed meanwhile,
        its unclaimed attempts are sent again by the sweeper."""
        steps: list[NextStep] = []
        remaining = list(attempt_ids)
        while remaining:
            # The room is booked under the lock before the claim: messages arrive on several
            # task threads at once, and each one seeing the same free room would together
            # start several times `max_in_flight`.
            with self._room:
                while self._in_flight >= self.max_in_flight:
                    self._room.wait(1.0)
                room = self.max_in_flight - self._in_flight
                taken, remaining = remaining[:room], remaining[room:]
                self._in_flight += len(taken)
            steps += self._claim_and_start(taken)
        return steps

    def _claim_and_start(self, attempt_ids: Sequence[str]) -> list[NextStep]:
        """Claim and start these attempts, whose room `accept` booked; the room of those not
        claimed is given back."""
        token = f"{PROCESS}:{uuid.uuid4().hex[:12]}"
        now = utcnow()
        claimed = 0
        try:
            with transaction() as session:
                result = claims.claim(session, attempt_ids, token, now=now, lease_s=self.settings.lease_s)
                steps = release_closed(session, result.closed, result.revoked)
            claimed = len(result.claimed)
        finally:
            if claimed < len(attempt_ids):
                with self._room:
                    self._in_flight -= len(attempt_ids) - claimed
                    self._room.notify_all()
        if result.claimed:
            with self._room:
                self._live.update(c.id for c in result.claimed)
                self._tokens[token] = self._tokens.get(token, 0) + len(result.claimed)
            limits = self._limits_of_keys({c.owner_id for c in result.claimed})
            admitted = self._breakers(result.claimed)
            for claim in result.claimed:
                if admitted.get(claim.id, True):
                    self.loop.submit(self._call(claim, limits.get(claim.owner_id)))
                else:
                    self.writer.submit(Failed(claim, Transient(BREAKER_OPEN), action=Action.FAILOVER))
        # Last: it opens a transaction of its own, and should it fail, the claimed calls are
        # already running and their room is counted where `done` gives it back.
        return steps + investigate(result.not_claimed, now)

    def _breakers(self, claimed: Sequence[Claimed]) -> dict[str, bool]:
        """May each call go? One look per deployment while its breaker is closed (or open); a
        half-open breaker counts each call it lets through as a probe. Redis away: yes."""
        now = time.time()
        by_deployment: dict[str, bool | None] = {}
        answers: dict[str, bool] = {}
        for claim in claimed:
            try:
                if claim.deployment not in by_deployment:
                    by_deployment[claim.deployment] = health.preview_admission(claim.deployment, now)
                preview = by_deployment[claim.deployment]
                answers[claim.id] = preview if preview is not None else health.admit(claim.deployment, now)
            except Exception:
                log.warning("could not ask the breaker of %s; calling", claim.deployment, exc_info=True)
                answers[claim.id] = True
        return answers

    def _limits_of_keys(self, owner_ids: set[str]) -> dict[str, capacity.Limits]:
        """The keys' own rate limits, cached briefly (they change rarely)."""
        now = time.monotonic()
        stale = [
            o
            for o in owner_ids
            if now - self._key_limits.get(o, (-1e9, capacity.Limits()))[0] > KEY_LIMITS_CACHE_S
        ]
        if stale:
            try:
                with transaction() as session:
                    rows = session.execute(
                        select(ApiKey.id, ApiKey.rpm, ApiKey.tpm).where(ApiKey.id.in_(stale))
                    )
                    for key_id, rpm, tpm in rows:
                        self._key_limits[key_id] = (now, capacity.Limits(rpm, tpm))
            except Exception:
                log.warning("could not read keys' rate limits", exc_info=True)
        return {o: self._key_limits[o][1] for o in owner_ids if o in self._key_limits}

    # ------------------------------------------------------------ the call (the event loop)

    async def _call(self, claim: Claimed, key_limits: capacity.Limits | None) -> None:
        try:
            await self._make_call(claim, key_limits)
        except Exception as exc:  # our own bug: never strand the attempt; retry, then fail over
            log.exception("call of attempt %s failed in our code", claim.id)
            self.writer.submit(
                Failed(claim, Transient(f"unexpected {type(exc).__name__}"), action=Action.RETRY)
            )

    async def _make_call(self, claim: Claimed, key_limits: capacity.Limits | None) -> None:
        if claim.kind == JobKind.EMBEDDING:  # issue 14: an embedding call (workers/embedding_calls.py)
            await embedding_calls.make_call(self, claim, key_limits)
            return
        deployment = self.catalog.deployment(claim.deployment)
        if deployment is None:
            gone = ProviderError(f"deployment {claim.deployment!r} left the catalog")
            self.writer.submit(Failed(claim, gone, action=Action.FAILOVER))
            return
        request = ChatRequest.model_validate(claim.request)
        if claim.max_tokens is not None and (
            request.max_tokens is None or request.max_tokens > claim.max_tokens
        ):
            request = request.model_copy(update={"max_tokens": claim.max_tokens})
        booked = self._tokens_to_book(claim, request, deployment)
        key = (claim.owner_id, key_limits) if key_limits is not None else None
        admission = await capacity.admit(deployment, booked, key=key)
        timeout = self.settings.provider_timeout_s + 5
        await capacity.wait_for_slot(admission, deployment, claim.id, timeout)
        started = time.perf_counter()
        error: ProviderError | None = None
        try:
            adapter = await self.loop.adapter(
                deployment,
                emulator_url=self.settings.emulator_url,
                emulator_mode=self.settings.emulator_mode,
                timeout_s=self.settings.provider_timeout_s,
            )
            sink = streams.delta_sink(claim.job_id) if claim.stream else None
            try:
                response = await asyncio.wait_for(adapter.complete(request, on_text=sink), timeout)
            finally:  # every delta out before the outcome (and its `done`) or a retry's `call`
                if sink is not None:
                    await sink.flush()
        except TimeoutError:
            error = Transient(f"no answer within {timeout:.0f} s (timed out)")
        except ProviderError as exc:  # issue 10 (hostile): no key or internal host reaches users
            error = await asyncio.to_thread(
                scrub_for, exc, deployment.api_key_env, self.endpoints(deployment)
            )
        latency = (time.perf_counter() - started) * 1000
        await report_call(
            admission,
            deployment,
            latency,
            error,
            used_tokens=None
            if error is not None
            else response.usage.input_tokens + response.usage.output_tokens,
            headers=None if error is not None else response.rate_limit_headers,
        )
        if error is not None:
            self.writer.submit(Failed(claim, error, latency_ms=round(latency, 2)))
            return
        health.record_success(deployment.name, time.time(), latency)
        outcome = sanitized(
            response,
            cost=settle_cost(deployment.model, response.usage),
            latency_ms=round(latency, 2),
            emulated=self.loop.emulated.get(deployment.name, False),
        )
        self.writer.submit(Succeeded(claim, outcome))

    def endpoints(self, deployment: Deployment) -> tuple[str | None, ...]:
        """The base URLs a call to `deployment` may go to: hosts to keep out of error text."""
        return (deployment.spec.base_url, self.settings.emulator_url)

    def _tokens_to_book(self, claim: Claimed, request: ChatRequest, deployment: Deployment) -> int:
        """The job's estimate: its input as this provider counts it, plus the output it may produce."""
        raw = claim.request_tokens if claim.request_tokens is not None else raw_request_tokens(request)
        n_in = calibrate(raw, deployment.provider)
        return n_in + expected_output_tokens(deployment.model, request.max_tokens, n_in)


_engine: CallEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> CallEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = CallEngine(get_settings(), get_catalog(), get_call_loop())
        return _engine
