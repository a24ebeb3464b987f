"""The engine's writer: outcomes of provider calls written to the job store many at a time,
side effects only after the commit, and the leases of calls in flight kept alive.

One thread per worker process. It gathers outcomes for a few milliseconds (or until it has a
couple of hundred) and writes all the successes in one transaction (`calls.write_successes`),
then each failure in its own (a failure decides what comes next and may route a failover).
Only after a commit does it do what may fail without harm: stream `done` events, batch
checks, budget alerts, the messages a failure asked for. So a Redis fault never throws away
a paid answer. When Postgres is away the outcomes wait here (the engine takes no more work
meanwhile) and are written when it is back. A second thread renews the leases of the calls
still in flight every few seconds: on its own so that a slow write (Postgres under load, a
large batch of vectors) never delays a renewal past the lease, which would hand a call that
is still running to another worker and buy it twice.

A result the database refuses for a reason other than being away (a value it cannot store)
is written again alone, with its text scrubbed; if even that fails, the attempt fails with
the reason, so the call is never bought again and again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Protocol

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.clock import utcnow
from core.settings import Settings
from core.text import storable
from core.types import ChatResponse
from jobstore import claims, transitions
from jobstore.claims import Claimed
from jobstore.db import transaction
from routing.catalog import Catalog
from workers import health, streams
from workers.batch_progress import after_step
from workers.calls import Failed, Succeeded, Written, write_failure, write_successes
from workers.messages import send_alert_webhook, send_step
from workers.next_step import NextStep, Nothing
from workers.policy import Action
from workers.providers.errors import UnstorableResult

log = logging.getLogger(__name__)
FLUSH_S = 0.01  # how long the first outcome waits for company
MAX_ITEMS = 200
RETRY_MAX_S = 5.0
RENEW_FRACTION = 0.2  # leases are renewed every fifth of their length: four renewals may fail in a row
MAX_ID_CHARS = 200  # attempts.provider_request_id


def sanitized(
    response: ChatResponse, *, cost: Decimal, latency_ms: float, emulated: bool
) -> transitions.CallOutcome:
    """A provider's answer as the store records it, scrubbed of what Postgres cannot hold."""
    calls = [c.model_dump(mode="json") for c in response.tool_calls] or None
    if calls:
        for call in calls:
            call["function"]["arguments"] = storable(call["function"]["arguments"])
            call["function"]["name"] = storable(call["function"]["name"])
    request_id = response.provider_request_id
    return transitions.CallOutcome(
        text=storable(response.text),
        tool_calls=calls,
        finish_reason=response.finish_reason.value,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cached_input_tokens=response.usage.cached_input_tokens,
        reasoning_tokens=response.usage.reasoning_tokens,
        cost_usd=cost,
        latency_ms=latency_ms,
        provider_request_id=storable(request_id)[:MAX_ID_CHARS] if request_id else None,
        rate_limit_headers={storable(k): storable(v) for k, v in response.rate_limit_headers.items()},
        emulated=emulated,
    )


# The job store away or too busy (no pooled connection within the pool timeout): try again.
TRANSIENT = (OperationalError, InterfaceError, PoolTimeout)
# A write failing for any other reason (a bug) is tried this many times, then the outcome is
# recorded as a failed attempt (a success) or left to its lease (a failure), never retried for ever.
MAX_STRIKES = 3


class Engine(Protocol):
    """What the writer needs of the engine it serves (`workers/engine.py`)."""

    def held_tokens(self) -> list[str]: ...
    def done(self, claims_done: Sequence[Claimed]) -> None: ...


class OutcomeWriter:
    def __init__(self, engine: Engine, settings: Settings, catalog: Catalog) -> None:
        self.engine = engine
        self.settings = settings
        self.catalog = catalog
        self._queue: queue.SimpleQueue[Succeeded | Failed] = queue.SimpleQueue()
        self._waiting: list[Succeeded | Failed] = []  # outcomes whose write must be tried again
        self._strikes: dict[str, int] = {}  # attempt id -> unexpected write errors so far
        self._outage = False  # the last write found the job store away
        self._thread = threading.Thread(target=self._run, name="llmqueue-writer", daemon=True)
        self._thread.start()
        self._renewer = threading.Thread(target=self._renew_loop, name="llmqueue-lease-renewer", daemon=True)
        self._renewer.start()

    def submit(self, item: Succeeded | Failed) -> None:
        self._queue.put(item)

    # ------------------------------------------------------------ the loop

    def _take(self, timeout: float) -> list[Succeeded | Failed]:
        items = self._waiting
        self._waiting = []
        try:
            if not items:
                items.append(self._queue.get(timeout=timeout))
            deadline = time.monotonic() + FLUSH_S
            while len(items) < MAX_ITEMS:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                items.append(self._queue.get(timeout=left))
        except queue.Empty:
            pass
        return items

    def _run(self) -> None:
        backoff = 0.0
        while True:
            items = self._take(timeout=1.0)
            if items:
                try:
                    self._write(items)
                    backoff = 0.0
                except TRANSIENT:
                    self._outage = True
                    backoff = min(RETRY_MAX_S, max(0.2, backoff * 2))
                    log.warning("the job store is away; %d outcomes wait %.1f s", len(self._waiting), backoff)
                    time.sleep(backoff)
                except Exception:  # never let the writer die: the outcomes wait and are tried again
                    log.exception("writing outcomes failed")
                    self._waiting = self._struck(self._waiting)
                    time.sleep(1.0)

    def _renew_loop(self) -> None:
        while True:
            time.sleep(RENEW_FRACTION * self.settings.lease_s)
            self._renew()

    def _struck(self, items: list[Succeeded | Failed]) -> list[Succeeded | Failed]:
        """The outcomes to try again after an unexpected error: a success that failed to write
        MAX_STRIKES times becomes a failed attempt (unstorable); such a failure is given up, and
        its lease lapses (the sweeper repairs the attempt)."""
        again: list[Succeeded | Failed] = []
        for item in items:
            strikes = self._strikes[item.claim.id] = self._strikes.get(item.claim.id, 0) + 1
            if strikes < MAX_STRIKES:
                again.append(item)
            elif isinstance(item, Succeeded):
                reason = "the answer could not be stored (an error in llmqueue's write path)"
                again.append(Failed(item.claim, UnstorableResult(reason), action=Action.FAIL))
                self._strikes[item.claim.id] = 0
            else:
                log.error("giving up writing the failure of attempt %s; its lease will lapse", item.claim.id)
                self._strikes.pop(item.claim.id, None)
                self.engine.done([item.claim])
        return again

    def _renew(self) -> None:
        tokens = self.engine.held_tokens()
        if not tokens:
            return
        try:
            with transaction() as session:
                claims.renew(session, tokens, now=utcnow(), lease_s=self.settings.lease_s)
        except Exception:  # the database is away: try again next round; the lease has slack
            log.warning("could not renew %d leases", len(tokens), exc_info=True)

    # ------------------------------------------------------------ writing

    def _write(self, items: list[Succeeded | Failed]) -> None:
        successes = [i for i in items if isinstance(i, Succeeded)]
        failures = [i for i in items if isinstance(i, Failed)]
        # Until written, every outcome waits: whatever error stops this, `_waiting` holds
        # exactly what is not yet written (an outcome written twice would free its room twice).
        self._waiting = list(items)
        if self._outage:
            self._renew()  # back from an outage: hold on to our calls before anything else
            self._outage = False
        if successes:
            try:
                written = write_successes(successes, utcnow())
            except DBAPIError as exc:
                if isinstance(exc, TRANSIENT):
                    raise
                written, refused = self._one_by_one(successes)
                failures += refused
            self._waiting = list(failures)
            self.engine.done([s.claim for s in successes])
            for item in successes:
                self._strikes.pop(item.claim.id, None)
            self._after_successes(written)
        for index, failure in enumerate(failures):
            step = self._write_failure(failure)
            self._waiting = list(failures[index + 1 :])
            self._strikes.pop(failure.claim.id, None)
            self.engine.done([failure.claim])
            self._after(step)

    def _one_by_one(self, items: Sequence[Succeeded]) -> tuple[Written, list[Failed]]:
        """Write each result alone; one the database refuses outright becomes a failed attempt."""
        written = Written([], [], [])
        refused: list[Failed] = []
        for item in items:
            try:
                one = write_successes([item], utcnow())
            except TRANSIENT:
                raise
            except DBAPIError as exc:
                reason = (
                    f"the answer could not be stored ({type(exc.orig).__name__ if exc.orig else 'database'})"
                )
                log.error("attempt %s: %s: %s", item.claim.id, reason, exc)
                refused.append(Failed(item.claim, UnstorableResult(reason), action=Action.FAIL))
                continue
            written.steps += one.steps
            written.succeeded += one.succeeded
            written.alerts += one.alerts
        return written, refused

    def _write_failure(self, failure: Failed) -> NextStep:
        if failure.action is None:  # counts against the deployment (not a refusal or our bug)
            try:
                after = health.record_failure(failure.claim.deployment, time.time(), failure.error)
                failure = replace(failure, breaker_open=after is not None and after.breaker == "open")
            except Exception:  # Redis away: the breaker misses one failure, the job goes on
                log.warning("could not record a failure of %s", failure.claim.deployment, exc_info=True)
        step = write_failure(failure, settings=self.settings, catalog=self.catalog, now=utcnow())
        if isinstance(step, Nothing) and step.ended:
            if failure.claim.stream:
                self._publish(failure.claim.job_id, "failed")
            self._ended([failure.claim.job_id])
        return step

    # ------------------------------------------------------------ after the commit (best effort)

    def _after_successes(self, written: Written) -> None:
        for item in written.succeeded:
            if item.claim.stream:
                self._publish(item.claim.job_id, "succeeded")
        self._ended([i.claim.job_id for i in written.succeeded])
        checked: set[str] = set()
        for step in written.steps:
            if isinstance(step, Nothing) and step.ended_batch and step.ended_batch not in checked:
                checked.add(step.ended_batch)
                self._after(step)
        for alert in written.alerts:
            log.warning(
                "budget %s of key %s passed its soft limit: $%s spent of $%s (limit $%s)",
                alert.budget_id,
                alert.owner_id,
                alert.spent_usd,
                alert.soft_limit_usd,
                alert.limit_usd,
            )
            try:  # issue 10 (hostile): and the key's alert webhook, signed, by a task
                send_alert_webhook(alert)
            except Exception:  # the broker is away: the alert stays in the log line above
                log.warning("could not send the alert webhook of budget %s", alert.budget_id, exc_info=True)

    def _after(self, step: NextStep) -> None:
        try:
            send_step(step)
            after_step(step)
        except Exception:  # the broker is away: the sweeper finds what this would have sent
            log.warning("could not send %s", step, exc_info=True)

    def _ended(self, job_ids: list[str]) -> None:
        try:
            streams.publish_ended(job_ids)
        except Exception:  # waiters look at Postgres themselves too
            log.warning("could not announce %d ended jobs", len(job_ids), exc_info=True)

    def _publish(self, job_id: str, status: str) -> None:
        try:
            streams.publish(job_id, "done", status)
        except Exception:
            log.warning("could not publish the end of job %s's stream", job_id, exc_info=True)
