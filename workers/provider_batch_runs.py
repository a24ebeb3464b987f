"""The provider-batch worker: submits planned provider batches, polls them with backoff, cancels
them when asked, and writes their results back once they end (`llmqueue worker -Q provider_batch`).

Every step is a plain function run under the provider batch's lease (`jobstore.provider_batches
.take`) and ends by storing what comes next in Postgres: the phase, the provider's state and
counts, and `next_poll_at`. A periodic loop (`send_due`, one process a round, in dispatchers
and provider-batch workers) sends a message for each provider batch that is due and that no
worker holds, so a provider batch whose worker was killed is taken up by any other within a
lease. Polls start `provider_batch_poll_s` after the submission and each wait grows by half,
up to `provider_batch_poll_max_s`.

    submit   planned -> submitting -> submitted. Its lines' requests are built by the
             provider's batch client from the jobs' requests (the online adapter's own
             translation). A rate limit or a blip (or, seen at a poll, a batch the provider
             failed for its enqueued-token limit): planned again, later, until the give-up
             time. Any other refusal: every line back online. A worker that died
             mid-submission leaves `submitting`: whether the provider made the batch cannot
             be known without its id, so after the (long) submit lease its lines go back
             online (see the README).
    poll     a cancel asked for (the llmqueue batch was cancelled, or the give-up time came)
             is sent to the provider first; then the provider's state. Once it has ended:
             collecting, then the results are read as they stream and written a chunk at a
             time (`workers/provider_batch_lines.py`); the lines never reported follow; then
             settled, with the tally of its lines and its cost at batch prices.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from core.clock import aware, utcnow
from core.errors import BatchLineError
from core.provider_batches import provider_batch_spec
from core.settings import get_settings
from core.types import ChatRequest
from jobstore import provider_batches as store
from jobstore.batch_models import ProviderBatch, ProviderBatchCancel, ProviderBatchPhase
from jobstore.db import transaction
from routing.catalog import Deployment, ModelSpec, get_catalog
from workers.call_loop import get_call_loop
from workers.messages import send_provider_batch_poll, send_provider_batch_submit
from workers.provider_batch_lines import Unanswered, send_back, unreported, write_results
from workers.providers.base import resolve_target
from workers.providers.batch_base import (
    BatchLine,
    BatchLineResult,
    BatchNotEnded,
    ProviderBatchClient,
    ProviderBatchRef,
    ProviderBatchState,
    ProviderBatchStatus,
    batch_client_class,
)
from workers.providers.errors import ProviderError, RateLimited, Transient

log = logging.getLogger(__name__)
T = TypeVar("T")

DUE_EVERY_S = 1.0  # the loop that sends what is due
RESEND_AFTER_S = 30.0  # a message sent but not taken by then (lost, or its worker died) is sent again
LEASE_S = 60.0  # a poll's, renewed while results are written
SUBMIT_LEASE_S = 1800.0  # a submission may upload hundreds of MB; past this it is presumed dead
RESULTS_CHUNK = 500  # result lines written per transaction
CLIENT_TIMEOUT_S = 300.0  # one batch API call (an upload, a results download) at least this long
GROWTH = 1.5


def next_interval(previous_s: float, first_s: float, max_s: float) -> float:
    """The wait before the next poll: `first_s`, then half as long again each time, up to `max_s`."""
    if previous_s <= 0:
        return min(first_s, max_s)
    return min(max_s, previous_s * GROWTH)


# ---------------------------------------------------------------- the loop


def send_due(now: datetime | None = None) -> int:
    """Ask for the provider batches of cancelled batches to be cancelled, then send a message
    for each provider batch that is due and that no worker holds; returns how many."""
    now = now or utcnow()
    with transaction() as session:
        store.request_cancels(session, now)
        due = store.take_due(session, now, RESEND_AFTER_S)
    for pb_id, phase in due:
        if phase in (ProviderBatchPhase.PLANNED, ProviderBatchPhase.SUBMITTING):
            send_provider_batch_submit(pb_id)
        else:
            send_provider_batch_poll(pb_id)
    return len(due)


# ---------------------------------------------------------------- clients, on the call loop

_clients: dict[str, tuple[ProviderBatchClient, bool]] = {}


async def _client(deployment: Deployment) -> tuple[ProviderBatchClient, bool]:
    """The deployment's batch client (built once per process, on the loop) and whether it
    talks to the built-in emulator."""
    found = _clients.get(deployment.name)
    if found is None:
        settings = get_settings()
        target = resolve_target(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=max(settings.provider_timeout_s, CLIENT_TIMEOUT_S),
        )
        found = (batch_client_class(deployment.provider)(target), target.emulated)
        _clients[deployment.name] = found
    return found


def warm_clients() -> list[str]:
    """Build now the batch client of every deployment that may go by provider batch (importing
    an SDK and building its client take seconds, better paid before the first submission);
    returns the deployments whose client could not be built (a missing key), left to fail
    at their first use with the proper error."""
    failed = []
    for deployment in get_catalog().deployments.values():
        if provider_batch_spec(deployment.provider) is None or not deployment.model.has_batch_prices:
            continue
        try:
            _run(_client(deployment))
        except Exception:
            failed.append(deployment.name)
    return failed


def _run(coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro

    return get_call_loop().run(wrapped())


# ---------------------------------------------------------------- a step under the lease


class Step:
    """One worker's turn with a provider batch: its lease, and what it stores when done."""

    def __init__(self, pb: ProviderBatch, token: str) -> None:
        self.pb = pb
        self.token = token

    def update(self, **values: Any) -> bool:
        with transaction() as session:
            return store.update_held(session, self.pb.id, self.token, **values)

    def done(self, **values: Any) -> None:
        with transaction() as session:
            store.let_go(session, self.pb.id, self.token, **values)

    def later(self, wait_s: float, **values: Any) -> str:
        self.done(next_poll_at=store.next_poll(utcnow() + timedelta(seconds=wait_s)), **values)
        return f"again in {wait_s:.1f} s"

    def renew(self) -> None:
        self.update(lease_until=utcnow() + timedelta(seconds=LEASE_S))


def _take(pb_id: str, lease_s: float) -> Step | None:
    token = uuid.uuid4().hex
    with transaction() as session:
        pb = store.take(session, pb_id, token, utcnow(), lease_s)
    return Step(pb, token) if pb is not None else None


def _guarded(step: Step, work: Any) -> str:
    """Run a step; if it fails in our own code, give the lease up so it is tried again soon."""
    try:
        result: str = work(step)
        return result
    except Exception:
        log.exception("provider batch %s: the step failed; tried again later", step.pb.id)
        try:
            step.later(get_settings().provider_batch_poll_s)
        except Exception:  # the database is away: the lease runs out and the loop resends it
            log.warning("could not give up the lease of provider batch %s", step.pb.id, exc_info=True)
        raise


def _deployment(pb: ProviderBatch) -> Deployment | None:
    return get_catalog().deployment(pb.deployment)


# ---------------------------------------------------------------- submit


def _step(pb_id: str, lease_s: float, body: Callable[[Step], str]) -> str:
    """Run one step on the provider batch if this worker can take it (`_take`), guarded."""
    step = _take(pb_id, lease_s)
    if step is None:
        return "held by another worker, or settled"
    return _guarded(step, body)


def submit(pb_id: str) -> str:
    """Submit a planned provider batch (see the module docstring)."""
    return _step(pb_id, SUBMIT_LEASE_S, _submit)


def _submit(step: Step) -> str:
    pb = step.pb
    now = utcnow()
    if pb.phase in (ProviderBatchPhase.SUBMITTED, ProviderBatchPhase.COLLECTING):
        step.done(next_poll_at=now)
        return "already submitted"
    if pb.phase == ProviderBatchPhase.SUBMITTING:
        log.error("provider batch %s: its submission was interrupted; its lines go back online", pb.id)
        why = Unanswered(
            BatchLineError.SUBMIT_LOST.value,
            "the worker submitting the provider batch stopped before recording it "
            "(if the provider made the batch, it is never read)",
        )
        return _settle_all(step, why, error="the submission was interrupted")
    if pb.cancel_requested_at is not None:
        return _settle_all(
            step, Unanswered(BatchLineError.CANCELLED.value, "the batch was cancelled before submission")
        )
    deployment = _deployment(pb)
    if deployment is None:
        return _settle_all(
            step,
            Unanswered(BatchLineError.BATCH_FAILED.value, f"deployment {pb.deployment!r} left the catalog"),
        )
    with transaction() as session:
        requests = store.line_requests(session, pb.id)
    if not requests:
        return _settle(step)
    lines = [BatchLine(r.attempt_id, _request(r), deployment) for r in requests]
    if not step.update(phase=ProviderBatchPhase.SUBMITTING):
        return "lost the lease"
    try:
        client, _ = _run(_client(deployment))
        ref = _run(client.submit(lines, label=pb.id))
    except ProviderError as exc:
        if isinstance(exc, RateLimited | Transient) and now < aware(pb.give_up_at):
            wait = exc.retry_after or next_interval(pb.poll_interval_s, *_poll_bounds())
            log.warning(
                "provider batch %s: submission refused for now (%s); again in %.0f s", pb.id, exc, wait
            )
            return step.later(
                wait,
                phase=ProviderBatchPhase.PLANNED,
                poll_interval_s=wait,
                error_type=exc.kind.value,
                error_message=exc.message,
            )
        log.warning("provider batch %s: the provider refused it (%s); its lines go online", pb.id, exc)
        why = Unanswered(
            BatchLineError.BATCH_FAILED.value,
            f"the provider refused the batch ({exc.kind.value}: {exc.message})",
        )
        return _settle_all(step, why, error=str(exc))
    first = _poll_bounds()[0]
    step.done(
        phase=ProviderBatchPhase.SUBMITTED,
        ref=ref.to_json(),
        provider_state=ProviderBatchState.VALIDATING.value,
        submitted_at=utcnow(),
        next_poll_at=utcnow() + timedelta(seconds=first),
        poll_interval_s=first,
        error_type=None,
        error_message=None,
    )
    log.info(
        "provider batch %s: %d lines submitted to %s as %s", pb.id, len(lines), pb.deployment, ref.batch_id
    )
    return "submitted"


def _request(line: store.LineRequest) -> ChatRequest:
    """The line's request, with the output cap a budget set when the job set none."""
    request = ChatRequest.model_validate(line.request)
    if line.max_tokens is not None and (request.max_tokens is None or request.max_tokens > line.max_tokens):
        request = request.model_copy(update={"max_tokens": line.max_tokens})
    return request


def _poll_bounds() -> tuple[float, float]:
    settings = get_settings()
    return settings.provider_batch_poll_s, settings.provider_batch_poll_max_s


# ---------------------------------------------------------------- poll, cancel, collect


def poll(pb_id: str) -> str:
    """Look at a submitted provider batch (see the module docstring)."""
    return _step(pb_id, LEASE_S, _poll)


def _poll(step: Step) -> str:
    pb = step.pb
    now = utcnow()
    if pb.phase in (ProviderBatchPhase.PLANNED, ProviderBatchPhase.SUBMITTING):
        step.done(next_poll_at=now)
        return "not submitted yet"
    deployment = _deployment(pb)
    if deployment is None or pb.ref is None:
        return step.later(_poll_bounds()[1], error_message=f"deployment {pb.deployment!r} left the catalog")
    client, emulated = _run(_client(deployment))
    ref = ProviderBatchRef.from_json(pb.ref)
    if pb.phase == ProviderBatchPhase.SUBMITTED:
        _cancel_if_asked(step, client, ref, now)
        try:
            status = _run(client.poll(ref))
        except ProviderError as exc:
            wait = exc.retry_after or next_interval(pb.poll_interval_s, *_poll_bounds())
            log.warning("provider batch %s: poll failed (%s); again in %.0f s", pb.id, exc, wait)
            return step.later(
                wait, poll_interval_s=wait, error_type=exc.kind.value, error_message=exc.message
            )
        seen = _seen(status, pb.polls + 1)
        if _refused_for_now(status) and now < aware(pb.give_up_at):
            # The provider's batch queue was full (an enqueued-token limit): nothing ran, so
            # the same lines are submitted again later.
            wait = next_interval(pb.poll_interval_s, *_poll_bounds())
            log.warning(
                "provider batch %s: refused for now (%s); submitted again in %.0f s",
                pb.id,
                status.error,
                wait,
            )
            return step.later(wait, phase=ProviderBatchPhase.PLANNED, ref=None, poll_interval_s=wait, **seen)
        if not status.terminal:
            wait = next_interval(pb.poll_interval_s, *_poll_bounds())
            return step.later(wait, poll_interval_s=wait, **seen)
        step.update(phase=ProviderBatchPhase.COLLECTING, ended_at=now, **seen)
        log.info("provider batch %s ended at the provider: %s", pb.id, status.provider_status)
    return _collect(step, client, ref, deployment.model, emulated)


def _refused_for_now(status: ProviderBatchStatus) -> bool:
    return status.state is ProviderBatchState.FAILED and isinstance(status.error, RateLimited)


def _seen(status: ProviderBatchStatus, polls: int) -> dict[str, Any]:
    counts = status.counts
    return {
        "provider_state": status.state.value,
        "provider_status": status.provider_status[:64],
        "request_counts": (
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts
            else None
        ),
        "polls": polls,
        "error_type": status.error.kind.value if status.error is not None else None,
        "error_message": status.error.message if status.error is not None else None,
    }


def _cancel_if_asked(step: Step, client: ProviderBatchClient, ref: ProviderBatchRef, now: datetime) -> None:
    """Stop the provider's batch when the llmqueue batch was cancelled or its give-up time came."""
    pb = step.pb
    if pb.cancel_requested_at is None and now >= aware(pb.give_up_at):
        log.warning("provider batch %s: not done by its give-up time; cancelling it", pb.id)
        step.update(cancel_requested_at=now, cancel_reason=ProviderBatchCancel.GAVE_UP)
        pb.cancel_requested_at = now
    if pb.cancel_requested_at is None or pb.cancel_sent_at is not None:
        return
    try:
        _run(client.cancel(ref))
    except ProviderError as exc:  # asked again at the next poll
        log.warning("provider batch %s: cancel refused (%s)", pb.id, exc)
        return
    step.update(cancel_sent_at=now)
    pb.cancel_sent_at = now


def _collect(
    step: Step, client: ProviderBatchClient, ref: ProviderBatchRef, model: ModelSpec, emulated: bool
) -> str:
    """Write every line of an ended provider batch to its job, then settle it."""
    pb = step.pb
    try:
        status = _run(client.poll(ref))
        _run(_stream_results(step, client, ref, model, emulated))
    except (ProviderError, BatchNotEnded) as exc:
        # The stream broke off: read again later (the lines written stay written, once).
        wait = next_interval(pb.poll_interval_s, *_poll_bounds())
        log.warning("provider batch %s: reading results failed (%s); again in %.0f s", pb.id, exc, wait)
        return step.later(wait, poll_interval_s=wait)
    why = unreported(status)
    while True:  # the lines the provider never reported did not run
        with transaction() as session:
            left = store.held_lines(session, pb.id, limit=RESULTS_CHUNK)
        if not left:
            break
        send_back(pb, [(line, why) for line in left], utcnow())
        step.renew()
    return _settle(step)


async def _stream_results(
    step: Step, client: ProviderBatchClient, ref: ProviderBatchRef, model: ModelSpec, emulated: bool
) -> None:
    chunk: list[BatchLineResult] = []

    async def write() -> None:
        await asyncio.to_thread(
            write_results, step.pb, list(chunk), model=model, emulated=emulated, now=utcnow()
        )
        await asyncio.to_thread(step.renew)
        chunk.clear()

    async for result in client.results(ref):
        chunk.append(result)
        if len(chunk) >= RESULTS_CHUNK:
            await write()
    if chunk:
        await write()


def _settle_all(step: Step, why: Unanswered, *, error: str | None = None) -> str:
    """Every line still held meets its fate (online, failed or cancelled); then settle."""
    while True:
        with transaction() as session:
            left = store.held_lines(session, step.pb.id, limit=RESULTS_CHUNK)
        if not left:
            break
        send_back(step.pb, [(line, why) for line in left], utcnow())
        step.renew()
    return _settle(step, error_message=error) if error else _settle(step)


def _settle(step: Step, **values: Any) -> str:
    with transaction() as session:
        tally = store.line_tally(session, step.pb.id)
    step.done(
        phase=ProviderBatchPhase.SETTLED,
        settled_at=utcnow(),
        next_poll_at=None,
        lines_succeeded=tally.succeeded,
        lines_online=tally.online,
        lines_failed=tally.failed,
        lines_cancelled=tally.cancelled,
        cost_usd=tally.cost_usd,
        **values,
    )
    log.info(
        "provider batch %s settled: %d answered, %d online, %d failed, %d cancelled, $%s",
        step.pb.id,
        tally.succeeded,
        tally.online,
        tally.failed,
        tally.cancelled,
        tally.cost_usd,
    )
    return "settled"
